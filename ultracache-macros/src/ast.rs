//! The validated model of an annotated function.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{FnArg, Ident, ItemFn, Pat, Type};

use crate::util::{contains_impl_trait, return_type, Errors};

/// One argument of the function.
pub(crate) struct Arg {
    /// The binding, when the pattern is a plain identifier (or `self`).
    pub(crate) ident: Option<Ident>,
    /// The whole argument, for spans.
    pub(crate) tokens: TokenStream,
    /// Its type (`None` for a `self` receiver).
    pub(crate) ty: Option<Type>,
    pub(crate) impl_trait: bool,
}

pub(crate) struct Function {
    pub(crate) item: ItemFn,
    pub(crate) args: Vec<Arg>,
    pub(crate) ret: Type,
    pub(crate) is_async: bool,
}

/// Parses the annotated item as a function, or says plainly that it is not one.
pub(crate) fn parse_function(item: TokenStream, attr: &str) -> syn::Result<Function> {
    let item: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let span = match syn::parse2::<syn::Item>(item.clone()) {
                Ok(other) => item_span(&other),
                Err(_) => item.span(),
            };
            return Err(syn::Error::new(
                span,
                format!("`#[{attr}]` applies to functions and methods with a body"),
            ));
        }
    };
    let args = item
        .sig
        .inputs
        .iter()
        .map(|input| match input {
            FnArg::Receiver(r) => Arg {
                ident: Some(Ident::new("self", r.self_token.span)),
                tokens: r.to_token_stream(),
                ty: None,
                impl_trait: false,
            },
            FnArg::Typed(t) => Arg {
                ident: match &*t.pat {
                    Pat::Ident(p) if p.subpat.is_none() => Some(p.ident.clone()),
                    _ => None,
                },
                tokens: t.to_token_stream(),
                impl_trait: contains_impl_trait(&t.ty),
                ty: Some((*t.ty).clone()),
            },
        })
        .collect();
    Ok(Function {
        ret: return_type(&item.sig.output),
        is_async: item.sig.asyncness.is_some(),
        args,
        item,
    })
}

/// The span of what names an item (`struct Foo`), for "not a function" errors.
fn item_span(item: &syn::Item) -> Span {
    match item {
        syn::Item::Struct(s) => s
            .struct_token
            .span
            .join(s.ident.span())
            .unwrap_or(s.ident.span()),
        syn::Item::Enum(e) => e
            .enum_token
            .span
            .join(e.ident.span())
            .unwrap_or(e.ident.span()),
        syn::Item::Const(c) => c.ident.span(),
        syn::Item::Static(s) => s.ident.span(),
        syn::Item::Impl(i) => i.impl_token.span,
        syn::Item::Trait(t) => t.ident.span(),
        syn::Item::Mod(m) => m.ident.span(),
        syn::Item::Type(t) => t.ident.span(),
        other => other.span(),
    }
}

/// Rules every annotated function must follow to be wrapped at all.
pub(crate) fn check_wrappable(f: &Function, attr: &str, errors: &mut Errors) {
    let sig = &f.item.sig;
    if let Some(c) = &sig.constness {
        errors.spanned(c, format!("`#[{attr}]` cannot wrap a `const fn`"));
    }
    if let Some(v) = &sig.variadic {
        errors.spanned(v, format!("`#[{attr}]` cannot wrap a variadic function"));
    }
    if let syn::ReturnType::Type(_, ty) = &sig.output {
        if contains_impl_trait(ty) {
            errors.spanned(
                ty,
                format!("`#[{attr}]` needs a nameable return type, not `impl Trait`"),
            );
        }
    }
}
