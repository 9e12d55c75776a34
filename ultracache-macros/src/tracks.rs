//! `#[tracks]`: every model in the function's return value is recorded as a
//! read of the computation that called it.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::args::TracksArgs;
use crate::ast::{check_wrappable, Function};
use crate::util::{fake_return, private, private_at, Errors};

pub(crate) fn expand(args: TracksArgs, f: Function) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    check_wrappable(&f, "tracks", &mut errors);
    errors.finish()?;
    let p = private(args.krate.as_ref());
    let ret = &f.ret;
    let body = &f.item.block;
    let stmts = &body.stmts;
    let value = if f.is_async {
        let fake = fake_return(ret);
        quote!(async move { #fake #(#stmts)* }.await)
    } else {
        quote!((move || -> #ret #body)())
    };
    let pa = private_at(args.krate.as_ref(), ret.span());
    let assert = quote_spanned!(ret.span()=> let _: #pa::AssertModels<#ret>;);
    let attrs = &f.item.attrs;
    let vis = &f.item.vis;
    let sig = &f.item.sig;
    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            #assert
            let __ultracache_value: #ret = #value;
            #p::track_value(&__ultracache_value);
            __ultracache_value
        }
    })
}
