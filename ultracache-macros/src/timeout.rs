//! `timeout = …` and `forever`, shared by `#[cached]` and `#[derive(CacheModel)]`.

use darling::util::Flag;
use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, Lit};

use crate::args::RawExpr;
use crate::util::Errors;

pub(crate) enum Timeout {
    Default,
    Forever,
    Secs(syn::LitInt),
    Expr(Expr),
}

/// `timeout = …` and `forever`, checked.
pub(crate) fn parse(timeout: Option<&RawExpr>, forever: &Flag, errors: &mut Errors) -> Timeout {
    let flag = forever;
    let forever = flag.is_present();
    let Some(expr) = timeout else {
        return if forever {
            Timeout::Forever
        } else {
            Timeout::Default
        };
    };
    let expr = &expr.0;
    if forever {
        errors.push(syn::Error::new(
            flag.span(),
            "`forever` and `timeout` contradict each other: keep one",
        ));
    }
    match expr {
        Expr::Lit(l) => match &l.lit {
            Lit::Int(i) if i.base10_digits().starts_with('-') => {
                errors.spanned(expr, "`timeout` cannot be negative");
                Timeout::Default
            }
            Lit::Int(i) => match i.base10_parse::<u64>() {
                Ok(_) => Timeout::Secs(i.clone()),
                Err(_) => {
                    errors.spanned(i, "`timeout` must fit in whole seconds (a u64)");
                    Timeout::Default
                }
            },
            Lit::Float(x) => {
                errors.spanned(
                    x,
                    "`timeout` is whole seconds: write an integer, or a `Duration` \
                     such as `Duration::from_millis(1500)`",
                );
                Timeout::Default
            }
            other => {
                errors.spanned(
                    other,
                    "`timeout` is whole seconds or a `Duration` expression, not a literal of this kind",
                );
                Timeout::Default
            }
        },
        Expr::Unary(u) if matches!(u.op, syn::UnOp::Neg(_)) => {
            errors.spanned(u, "`timeout` cannot be negative");
            Timeout::Default
        }
        other => Timeout::Expr(other.clone()),
    }
}

/// The `Timeout` value the runtime takes.
pub(crate) fn tokens(p: &TokenStream, timeout: Timeout) -> TokenStream {
    match timeout {
        Timeout::Default => quote!(#p::Timeout::StoreDefault),
        Timeout::Forever => quote!(#p::Timeout::Forever),
        Timeout::Secs(lit) => {
            quote!(#p::Timeout::After(::core::time::Duration::from_secs(#lit)))
        }
        Timeout::Expr(e) => quote_spanned! {e.span()=>
            #p::Timeout::Computed(|| #p::IntoTimeout::into_timeout(#e))
        },
    }
}
