//! `#[cached]`: the function's result is kept in its own cache, keyed by its
//! arguments (or `key = …`), with what it read as dependencies.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::Expr;

use crate::args::CachedArgs;
use crate::ast::{check_wrappable, Function};
use crate::timeout;
use crate::util::{fake_return, private, private_at, Errors};

pub(crate) fn expand(args: CachedArgs, f: Function) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    check_wrappable(&f, "cached", &mut errors);
    let sig = &f.item.sig;
    if let Some(p) = sig.generics.type_params().next() {
        errors.spanned(
            p,
            "`#[cached]` functions cannot be generic over types: each function has one cache, \
             with one key and value type",
        );
    }
    if let Some(p) = sig.generics.const_params().next() {
        errors.spanned(p, "`#[cached]` functions cannot be generic over consts");
    }

    let timeout = timeout::parse(args.timeout.as_ref(), &args.forever, &mut errors);
    let p = private(args.krate.as_ref());
    let grace = args
        .stale_if_error
        .as_ref()
        .map(|e| stale_if_error(&e.0, &mut errors));
    let Key {
        owned: key,
        borrowed,
        asserts: assert_key,
    } = key(&args, &f, &mut errors);
    errors.finish()?;

    let name = sig.ident.to_string();
    let store = match &args.store {
        Some(s) => {
            let s = s.as_str();
            quote!(::core::option::Option::Some(#s))
        }
        None => quote!(::core::option::Option::None),
    };
    let timeout = timeout::tokens(&p, timeout);
    let ret = &f.ret;
    let ret_span = ret.span();
    let track_args = f.args.iter().filter_map(|a| a.ident.as_ref()).map(|ident| {
        let ident = respan(ident);
        quote!((&&#p::ArgProbe(&#ident)).__ultracache_track_arg();)
    });
    let body = &f.item.block;
    let stmts = &body.stmts;
    let shared = args.shared.is_present();
    let (call_sync, call_async) = if shared {
        (quote!(call_shared), quote!(call_shared_async))
    } else {
        (quote!(call), quote!(call_async))
    };
    let call = if f.is_async {
        let fake = fake_return(ret);
        quote! {
            #p::#call_async(
                &__ULTRACACHE_FN,
                __ultracache_key,
                __ultracache_outcome,
                __ultracache_weigh,
                __ultracache_key_weigh,
                async move {
                    #fake
                    #(#track_args)*
                    #(#stmts)*
                },
            )
            .await
        }
    } else {
        quote! {
            #p::#call_sync(
                &__ULTRACACHE_FN,
                __ultracache_key,
                __ultracache_outcome,
                __ultracache_weigh,
                __ultracache_key_weigh,
                move || -> #ret {
                    #(#track_args)*
                    #(#stmts)*
                },
            )
        }
    };
    let pv = private_at(args.krate.as_ref(), ret_span);
    let mut assert_value = quote_spanned! {ret_span=>
        #pv::assert_value(&__ultracache_outcome, #pv::phantom::<#ret>());
    };
    if shared {
        assert_value.extend(quote_spanned! {ret_span=>
            #pv::assert_shared_value(&__ultracache_outcome, #pv::phantom::<#ret>());
        });
    }
    // The hit path, by the arguments as borrowed: no owned key unless it
    // misses (then `call` looks again, and computes or waits).
    let hit = borrowed.map(|borrowed| {
        quote! {
            if let ::core::option::Option::Some(__ultracache_hit) = (&&#p::HitProbe::new(
                #borrowed,
                || #key,
                &__ultracache_outcome,
                #p::phantom::<#ret>(),
            ))
                .__ultracache_hit(&__ULTRACACHE_FN)
            {
                return __ultracache_hit;
            }
        }
    });
    let attrs = &f.item.attrs;
    let vis = &f.item.vis;
    let new_body = quote! {{
        #[allow(unused_imports)]
        use #p::{
            BorrowedHit as _, KeyPart as _, ModelArg as _, NoBorrowedHit as _, PlainArg as _,
            PlainOutcome as _, ResultOutcome as _, WeighHeap as _, WeighKey as _,
            WeighNoKey as _, WeighNone as _,
        };
        static __ULTRACACHE_FN: #p::CachedFn = #p::CachedFn::new(
            #name,
            ::core::module_path!(),
            ::core::file!(),
            ::core::line!(),
            #store,
            #timeout,
        )#grace;
        #p::inventory::submit! { #p::FnRegistration(&__ULTRACACHE_FN) }
        let __ultracache_outcome = (&&#p::OutcomeProbe::<#ret>::NEW).__ultracache_outcome();
        #assert_value
        #hit
        let __ultracache_key = #key;
        #assert_key
        let __ultracache_weigh = (&&#p::WeighProbe::<#ret>::NEW).__ultracache_weigher();
        let __ultracache_key_weigh =
            (&&#p::KeyWeighProbe::of(&__ultracache_key)).__ultracache_key_weigher();
        #call
    }};
    Ok(quote! {
        #(#attrs)*
        #vis #sig #new_body
    })
}

/// How a call names its entry.
struct Key {
    /// The owned key expression.
    owned: TokenStream,
    /// A reference to the arguments as borrowed (`&str` for a `String` key
    /// part), for a hit that builds no owned key; `None` where the key is
    /// `key = …`, `()`, or has more parts than the borrowed form takes.
    borrowed: Option<TokenStream>,
    /// Assertions that put "not a key" errors on the user's tokens.
    asserts: TokenStream,
}

fn key(args: &CachedArgs, f: &Function, errors: &mut Errors) -> Key {
    let krate = args.krate.as_ref();
    if let Some(key) = &args.key {
        if let Some(skip) = &args.skip {
            if let Some(first) = skip.first() {
                errors.spanned(
                    first,
                    "`skip` has no effect with `key = …`: remove one of them",
                );
            }
        }
        let expr = &key.0;
        let span = expr.span();
        let owned = match expr {
            Expr::Tuple(t) => {
                let parts = t.elems.iter().map(|e| quote!((#e).to_owned()));
                quote!((#(#parts,)*))
            }
            Expr::Paren(p) => {
                let inner = &p.expr;
                quote!((#inner).to_owned())
            }
            e => quote!((#e).to_owned()),
        };
        let p = private_at(krate, span);
        let asserts = quote_spanned!(span=> #p::assert_key(&__ultracache_key););
        return Key {
            owned,
            borrowed: None,
            asserts,
        };
    }

    let skipped: Vec<String> = args
        .skip
        .iter()
        .flat_map(|s| s.iter())
        .map(|p| p.to_token_stream().to_string())
        .collect();
    for path in args.skip.iter().flat_map(|s| s.iter()) {
        let name = path.to_token_stream().to_string();
        if !f
            .args
            .iter()
            .any(|a| a.ident.as_ref().is_some_and(|i| *i == name))
        {
            errors.spanned(
                path,
                format!("`skip({name})`: the function has no argument `{name}`"),
            );
        }
    }
    let p = private(krate);
    let mut parts = Vec::new();
    let mut borrowed = Vec::new();
    let mut spans = Vec::new();
    for arg in &f.args {
        let Some(ident) = &arg.ident else {
            errors.spanned(
                &arg.tokens,
                "this argument has no name to key on: bind it to a name, or choose the key with `key = …`",
            );
            continue;
        };
        if skipped.iter().any(|s| ident == s) {
            continue;
        }
        if arg.impl_trait {
            errors.spanned(
                &arg.tokens,
                "an `impl Trait` argument cannot be part of the key: leave it out with \
                 `skip(…)` or choose the key with `key = …`",
            );
            continue;
        }
        spans.push(arg.ty.as_ref().map_or(ident.span(), |t| t.span()));
        let ident = respan(ident);
        parts.push(quote!(#ident.to_owned()));
        borrowed.push(quote!(#ident.__ultracache_key_part()));
    }
    let asserts = match spans.len() {
        1 => {
            let p = private_at(krate, spans[0]);
            quote_spanned!(spans[0]=> #p::assert_key(&__ultracache_key);)
        }
        _ => spans
            .iter()
            .enumerate()
            .map(|(i, span)| {
                let p = private_at(krate, *span);
                let i = syn::Index {
                    index: i as u32,
                    span: *span,
                };
                quote_spanned!(*span=> #p::assert_key(&__ultracache_key.#i);)
            })
            .collect(),
    };
    let borrowed = match borrowed.len() {
        0 => None,
        1 => Some(borrowed.remove(0)),
        n if n <= MAX_PARTS => Some(quote!(&#p::Parts((#(#borrowed,)*)))),
        _ => None,
    };
    let owned = match parts.len() {
        0 => quote!(()),
        1 => parts.remove(0),
        _ => quote!((#(#parts,)*)),
    };
    Key {
        owned,
        borrowed,
        asserts,
    }
}

/// `.stale_if_error(…)` on the function's registration, from whole seconds
/// or a `Duration` expression.
fn stale_if_error(expr: &Expr, errors: &mut Errors) -> TokenStream {
    let grace = match expr {
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(secs),
            ..
        }) if secs.base10_parse::<u64>().is_ok() => {
            quote!(::core::time::Duration::from_secs(#secs))
        }
        Expr::Lit(other) => {
            errors.spanned(
                other,
                "`stale_if_error` is whole seconds (a u64) or a `Duration` expression",
            );
            return TokenStream::new();
        }
        Expr::Unary(u) if matches!(u.op, syn::UnOp::Neg(_)) => {
            errors.spanned(u, "`stale_if_error` cannot be negative");
            return TokenStream::new();
        }
        other => quote_spanned!(other.span()=> #other),
    };
    quote!(.stale_if_error(#grace))
}

/// The most key arguments the borrowed hit path takes (the runtime's
/// `MAX_PARTS`).
const MAX_PARTS: usize = 8;

/// The same name, resolved at the call site but marked as macro output (so
/// lints about generated code do not land on the user's argument).
fn respan(ident: &syn::Ident) -> syn::Ident {
    syn::Ident::new(&ident.to_string(), Span::call_site())
}
