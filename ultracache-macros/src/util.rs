//! Helpers shared by the expansions.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::{Path, ReturnType, Type};

/// `::ultracache::__private`, or `<crate = …>::__private`.
pub(crate) fn private(krate: Option<&Path>) -> TokenStream {
    match krate {
        Some(path) => quote!(#path::__private),
        None => quote!(::ultracache::__private),
    }
}

/// `__private` with its tokens on `span`, so that errors about a call built
/// from it land on the user's tokens rather than on the attribute.
pub(crate) fn private_at(krate: Option<&Path>, span: Span) -> TokenStream {
    match krate {
        Some(path) => quote_spanned!(span=> #path::__private),
        None => quote_spanned!(span=> ::ultracache::__private),
    }
}

/// The return type, `()` when none is written.
pub(crate) fn return_type(ret: &ReturnType) -> Type {
    match ret {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    }
}

/// Whether a type mentions `impl Trait` anywhere.
pub(crate) fn contains_impl_trait(ty: &Type) -> bool {
    struct Finder(bool);
    impl<'ast> syn::visit::Visit<'ast> for Finder {
        fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
            self.0 = true;
        }
    }
    let mut f = Finder(false);
    syn::visit::Visit::visit_type(&mut f, ty);
    f.0
}

/// Tells the compiler an async block's output type, so `?` and `return`
/// inside the user's body infer (the trick `tracing` uses).
pub(crate) fn fake_return(ret: &Type) -> TokenStream {
    quote_spanned! {Span::call_site()=>
        #[allow(unreachable_code, clippy::diverging_sub_expression)]
        if false {
            let __ultracache_fake_return: #ret = loop {};
            return __ultracache_fake_return;
        }
    }
}

/// Collects errors, reported together (serde's `Ctxt`).
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub(crate) fn spanned<T: quote::ToTokens>(&mut self, tokens: T, msg: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, msg));
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        match self.0 {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
