//! `#[invalidates(Model, …)]`: after the function succeeds, the objects it
//! wrote (found in its arguments and result, or named by `id = …`) and their
//! kinds are invalidated. What its arguments name, and the kinds' lists, are
//! held from before the body runs until then (a reader that sees the write
//! before the invalidation is not served a copy computed from the old data).

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::args::InvalidatesArgs;
use crate::ast::{check_wrappable, Function};
use crate::util::{fake_return, private, private_at, Errors};

pub(crate) fn expand(args: InvalidatesArgs, f: Function) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    check_wrappable(&f, "invalidates", &mut errors);
    errors.finish()?;
    let p = private(args.krate.as_ref());
    let kinds = args
        .kinds
        .iter()
        .map(|k| quote_spanned!(k.span()=> <#k as #p::Trackable>::KIND));
    let n = args.kinds.len();
    let scan_args = f.args.iter().filter_map(|a| a.ident.as_ref()).map(|ident| {
        let ident = syn::Ident::new(&ident.to_string(), proc_macro2::Span::call_site());
        quote! {
            for __ultracache_kind in __ultracache_kinds {
                (&&#p::ArgProbe(&#ident))
                    .__ultracache_arg_deps(__ultracache_kind, &mut __ultracache_deps);
            }
        }
    });
    let id = args.id.as_ref().map(|id| {
        let kind = &args.kinds[0];
        let pi = private_at(args.krate.as_ref(), id.span());
        quote_spanned! {id.span()=>
            __ultracache_deps.push(#pi::id_dep::<#kind>(&(#id)));
        }
    });
    let ret = &f.ret;
    let body = &f.item.block;
    let stmts = &body.stmts;
    let value = if f.is_async {
        let fake = fake_return(ret);
        quote!(async move { #fake #(#stmts)* }.await)
    } else {
        quote!((move || -> #ret #body)())
    };
    let attrs = &f.item.attrs;
    let vis = &f.item.vis;
    let sig = &f.item.sig;
    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            #[allow(unused_imports)]
            use #p::{ModelArg as _, PlainArg as _, PlainSuccess as _, ResultSuccess as _};
            let __ultracache_kinds: [#p::Kind; #n] = [#(#kinds),*];
            let mut __ultracache_deps: #p::Vec<#p::Dep> = #p::Vec::new();
            let mut __ultracache_paths: #p::Vec<#p::String> = #p::Vec::new();
            #(#scan_args)*
            #id
            let __ultracache_hold = #p::hold_written(&__ultracache_deps, &__ultracache_kinds);
            let __ultracache_result: #ret = #value;
            if (&&#p::ArgProbe(&__ultracache_result)).__ultracache_succeeded() {
                for __ultracache_kind in __ultracache_kinds {
                    (&&#p::ArgProbe(&__ultracache_result))
                        .__ultracache_arg_deps(__ultracache_kind, &mut __ultracache_deps);
                    (&&#p::ArgProbe(&__ultracache_result))
                        .__ultracache_arg_paths(__ultracache_kind, &mut __ultracache_paths);
                }
                #p::invalidate_written(__ultracache_deps, __ultracache_paths, &__ultracache_kinds);
                __ultracache_hold.applied();
            }
            __ultracache_result
        }
    })
}
