//! Attribute arguments, parsed with darling over real syn types.

use darling::util::{Flag, PathList, SpannedValue};
use darling::FromMeta;
use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::punctuated::Punctuated;
use syn::{Expr, Meta, Path, Token};

/// An expression taken as written (darling would parse a string literal as
/// code; keys and timeouts are code, never strings).
#[derive(Clone, Debug)]
pub(crate) struct RawExpr(pub(crate) Expr);

impl FromMeta for RawExpr {
    fn from_expr(expr: &Expr) -> darling::Result<Self> {
        Ok(RawExpr(expr.clone()))
    }
}

impl ToTokens for RawExpr {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        self.0.to_tokens(tokens);
    }
}

/// `#[cached(...)]`.
#[derive(Debug, FromMeta)]
pub(crate) struct CachedArgs {
    /// Whole seconds, or a `Duration` expression.
    #[darling(default)]
    pub(crate) timeout: Option<RawExpr>,
    /// No expiry.
    #[darling(default)]
    pub(crate) forever: Flag,
    /// The key: any expression over the arguments.
    #[darling(default)]
    pub(crate) key: Option<RawExpr>,
    /// Arguments left out of the default key.
    #[darling(default)]
    pub(crate) skip: Option<PathList>,
    /// Values also go through the shared tier (Redis).
    #[darling(default)]
    pub(crate) shared: Flag,
    /// A named store from the configuration.
    #[darling(default)]
    pub(crate) store: Option<SpannedValue<String>>,
    /// Whole seconds, or a `Duration`: expired values kept this long to
    /// serve when computing them again fails.
    #[darling(default)]
    pub(crate) stale_if_error: Option<RawExpr>,
    /// The path of the `ultracache` crate, for re-exports.
    #[darling(default, rename = "crate")]
    pub(crate) krate: Option<Path>,
}

/// `#[tracks]` and `#[tracks(crate = "...")]`.
#[derive(Debug, Default, FromMeta)]
pub(crate) struct TracksArgs {
    #[darling(default, rename = "crate")]
    pub(crate) krate: Option<Path>,
}

/// `#[invalidates(Kind, Kind2, id = expr, crate = "...")]`: model paths first,
/// then options. Parsed by hand: darling has no positional paths.
pub(crate) struct InvalidatesArgs {
    pub(crate) kinds: Vec<Path>,
    pub(crate) id: Option<Expr>,
    pub(crate) krate: Option<Path>,
}

impl syn::parse::Parse for InvalidatesArgs {
    fn parse(input: syn::parse::ParseStream<'_>) -> syn::Result<Self> {
        let metas = Punctuated::<Meta, Token![,]>::parse_terminated(input)?;
        let mut out = InvalidatesArgs {
            kinds: Vec::new(),
            id: None,
            krate: None,
        };
        let mut errors: Option<syn::Error> = None;
        let mut push = |e: syn::Error| match &mut errors {
            Some(all) => all.combine(e),
            None => errors = Some(e),
        };
        for meta in metas {
            match meta {
                Meta::Path(path) => out.kinds.push(path),
                Meta::NameValue(nv) if nv.path.is_ident("id") => {
                    if out.id.is_some() {
                        push(syn::Error::new_spanned(&nv.path, "`id` is given twice"));
                    }
                    out.id = Some(nv.value);
                }
                Meta::NameValue(nv) if nv.path.is_ident("crate") => {
                    match Path::from_expr(&nv.value) {
                        Ok(p) => out.krate = Some(p),
                        Err(e) => push(e.into()),
                    }
                }
                Meta::NameValue(nv) => push(syn::Error::new_spanned(
                    &nv.path,
                    "unknown argument: `#[invalidates]` takes model types, `id = …` and `crate = \"…\"`",
                )),
                Meta::List(list) => push(syn::Error::new_spanned(
                    &list,
                    "expected a model type (e.g. `Post`) or `id = …`",
                )),
            }
        }
        if out.kinds.is_empty() {
            push(syn::Error::new(
                input.span(),
                "name the model type(s) this function writes: `#[invalidates(Post)]`",
            ));
        }
        if let (Some(id), true) = (&out.id, out.kinds.len() > 1) {
            push(syn::Error::new_spanned(
                id,
                "`id = …` names one object: use it with a single model type",
            ));
        }
        match errors {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}
