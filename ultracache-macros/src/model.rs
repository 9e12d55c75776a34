//! `#[derive(CacheModel)]`: a struct kept in the cache under a key made from
//! its key fields; the `<Type>Key` struct that holds them.

use darling::ast::Data;
use darling::util::{Flag, Ignored, SpannedValue};
use darling::{FromDeriveInput, FromField};
use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, Path, Type, Visibility};

use crate::args::RawExpr;
use crate::timeout;
use crate::util::{private, Errors};

/// serde implements tuples up to this length; the key is serialized as one.
const MAX_KEY_FIELDS: usize = 16;

#[derive(FromDeriveInput)]
#[darling(attributes(cache))]
pub(crate) struct ModelInput {
    ident: Ident,
    vis: Visibility,
    generics: syn::Generics,
    data: Data<Ignored, ModelField>,
    /// The stable name; the type's path when not given.
    #[darling(default)]
    name: Option<SpannedValue<String>>,
    #[darling(default)]
    timeout: Option<RawExpr>,
    #[darling(default)]
    forever: Flag,
    #[darling(default)]
    store: Option<String>,
    /// Never through the shared tier.
    #[darling(default)]
    local: Flag,
    #[darling(default, rename = "crate")]
    krate: Option<Path>,
}

#[derive(FromField)]
#[darling(attributes(cache), forward_attrs(serde))]
pub(crate) struct ModelField {
    ident: Option<Ident>,
    ty: Type,
    /// Its `#[serde(…)]` attributes.
    attrs: Vec<syn::Attribute>,
    /// Part of the key.
    #[darling(default)]
    key: Flag,
}

/// Cache models are structs with named fields: says so on the keyword.
pub(crate) fn check_shape(input: &syn::DeriveInput) -> syn::Result<()> {
    let (span, what) = match &input.data {
        syn::Data::Struct(s) => match &s.fields {
            syn::Fields::Named(_) => return Ok(()),
            syn::Fields::Unnamed(f) => (f.span(), "a tuple struct"),
            syn::Fields::Unit => (input.ident.span(), "a unit struct"),
        },
        syn::Data::Enum(e) => (e.enum_token.span, "an enum"),
        syn::Data::Union(u) => (u.union_token.span, "a union"),
    };
    Err(syn::Error::new(
        span,
        format!(
            "`CacheModel` is for structs with named fields (the key struct takes their names), not {what}"
        ),
    ))
}

/// The word of a `#[serde(…)]` attribute that keeps a field out of the
/// stored bytes or reshapes it.
fn lost_by_serde(attr: &syn::Attribute) -> Option<Ident> {
    let syn::Meta::List(list) = &attr.meta else {
        return None;
    };
    list.tokens.clone().into_iter().find_map(|t| match t {
        proc_macro2::TokenTree::Ident(i)
            if [
                "skip",
                "skip_serializing",
                "skip_deserializing",
                "skip_serializing_if",
                "flatten",
            ]
            .iter()
            .any(|w| i == w) =>
        {
            Some(i)
        }
        _ => None,
    })
}

pub(crate) fn expand(input: ModelInput) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    if let Some(param) = input.generics.params.first() {
        errors.spanned(
            param,
            "`CacheModel` cannot be derived for a generic type: each model has one cache, \
             with one key and value type",
        );
    }
    let Data::Struct(fields) = &input.data else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "`CacheModel` is for structs",
        ));
    };
    let keys: Vec<(&Ident, &Type)> = fields
        .iter()
        .filter(|f| f.key.is_present())
        .filter_map(|f| Some((f.ident.as_ref()?, &f.ty)))
        .collect();
    for f in fields.iter().filter(|f| f.key.is_present()) {
        if let Some(word) = f.attrs.iter().find_map(lost_by_serde) {
            errors.spanned(
                &word,
                format!(
                    "a `#[cache(key)]` field is stored with the object: `#[serde({word})]` \
                     would lose it"
                ),
            );
        }
    }
    if keys.is_empty() {
        errors.spanned(
            &input.ident,
            "a `CacheModel` needs a key: mark the field (or fields) that identify an object \
             with `#[cache(key)]`",
        );
    }
    if keys.len() > MAX_KEY_FIELDS {
        errors.spanned(
            keys[MAX_KEY_FIELDS].0,
            format!("a `CacheModel` key has at most {MAX_KEY_FIELDS} fields"),
        );
    }
    if let Some(name) = &input.name {
        if name.trim().is_empty() {
            errors.push(syn::Error::new(name.span(), "`name` cannot be empty"));
        }
    }
    let timeout = timeout::parse(input.timeout.as_ref(), &input.forever, &mut errors);
    errors.finish()?;

    let p = private(input.krate.as_ref());
    let ident = &input.ident;
    let vis = &input.vis;
    let key_ident = format_ident!("{}Key", ident);
    let type_name = ident.to_string();
    let name = match &input.name {
        Some(n) => {
            let n = n.as_str();
            quote!(#n)
        }
        None => quote!(::core::concat!(::core::module_path!(), "::", #type_name)),
    };
    let timeout = timeout::tokens(&p, timeout);
    let store = match &input.store {
        Some(s) => quote!(::core::option::Option::Some(#s)),
        None => quote!(::core::option::Option::None),
    };
    let local = input.local.is_present();

    let names: Vec<&Ident> = keys.iter().map(|(n, _)| *n).collect();
    let types: Vec<&Type> = keys.iter().map(|(_, t)| *t).collect();
    let asserts = types
        .iter()
        .map(|ty| quote_spanned!(ty.span()=> #p::assert_key_field::<#ty>();));
    let count = keys.len();
    let expecting = format!("the key of a `{type_name}`");
    let ser_fields = keys.iter().map(|(n, ty)| {
        quote_spanned! {ty.span()=>
            #p::serde::ser::SerializeTuple::serialize_element(&mut __tuple, &self.#n)?;
        }
    });
    // Bound as `__field0…`: a field named like a constant in scope, or like
    // the visitor's own variables, must not change the pattern.
    let bindings: Vec<Ident> = (0..keys.len())
        .map(|i| format_ident!("__field{}", i))
        .collect();
    let de_fields = keys
        .iter()
        .zip(&bindings)
        .enumerate()
        .map(|(i, ((_, ty), b))| {
            quote_spanned! {ty.span()=>
                let ::core::option::Option::Some(#b) =
                    #p::serde::de::SeqAccess::next_element::<#ty>(&mut __seq)?
                else {
                    return ::core::result::Result::Err(
                        #p::serde::de::Error::invalid_length(#i, &self),
                    );
                };
            }
        });
    let key_doc = format!("The key of a [`{type_name}`]: its `#[cache(key)]` fields.");
    let new_doc = format!("The key of the `{type_name}` with these key fields.");
    let field_docs = names
        .iter()
        .map(|n| format!("The `{n}` of the `{type_name}`."));
    let from = match (names.as_slice(), types.as_slice()) {
        ([n], [ty]) => quote! {
            #[automatically_derived]
            impl ::core::convert::From<#ty> for #key_ident {
                fn from(__field0: #ty) -> Self {
                    #key_ident { #n: __field0 }
                }
            }
        },
        _ => quote!(),
    };

    Ok(quote! {
        #[doc = #key_doc]
        #[derive(
            ::core::clone::Clone,
            ::core::fmt::Debug,
            ::core::cmp::PartialEq,
            ::core::cmp::Eq,
            ::core::hash::Hash,
        )]
        #vis struct #key_ident {
            #(
                #[doc = #field_docs]
                pub #names: #types,
            )*
        }

        #[allow(non_upper_case_globals, unused_qualifications, clippy::too_many_arguments)]
        const _: () = {
            const __ULTRACACHE_NAME: &str = #name;

            impl #key_ident {
                #[doc = #new_doc]
                pub fn new(#(#names: #types),*) -> Self {
                    #key_ident { #(#names),* }
                }
            }

            #from

            // The key's bytes: its fields in order, as a tuple. Each field's
            // part is spanned on its type, where a missing trait is reported.
            #[automatically_derived]
            impl #p::serde::Serialize for #key_ident {
                fn serialize<__S: #p::serde::Serializer>(
                    &self,
                    __serializer: __S,
                ) -> ::core::result::Result<__S::Ok, __S::Error> {
                    let mut __tuple =
                        #p::serde::Serializer::serialize_tuple(__serializer, #count)?;
                    #(#ser_fields)*
                    #p::serde::ser::SerializeTuple::end(__tuple)
                }
            }

            #[automatically_derived]
            impl<'de> #p::serde::Deserialize<'de> for #key_ident {
                fn deserialize<__D: #p::serde::Deserializer<'de>>(
                    __deserializer: __D,
                ) -> ::core::result::Result<Self, __D::Error> {
                    struct __Visitor;
                    impl<'de> #p::serde::de::Visitor<'de> for __Visitor {
                        type Value = #key_ident;
                        fn expecting(
                            &self,
                            __f: &mut ::core::fmt::Formatter<'_>,
                        ) -> ::core::fmt::Result {
                            __f.write_str(#expecting)
                        }
                        fn visit_seq<__A: #p::serde::de::SeqAccess<'de>>(
                            self,
                            mut __seq: __A,
                        ) -> ::core::result::Result<#key_ident, __A::Error> {
                            #(#de_fields)*
                            ::core::result::Result::Ok(#key_ident { #(#names: #bindings),* })
                        }
                    }
                    #p::serde::Deserializer::deserialize_tuple(__deserializer, #count, __Visitor)
                }
            }

            #[automatically_derived]
            impl #p::CacheModel for #ident {
                type Key = #key_ident;
                const KIND: #p::Kind = #p::Kind::new(__ULTRACACHE_NAME);

                fn key(&self) -> #key_ident {
                    #key_ident { #(#names: ::core::clone::Clone::clone(&self.#names)),* }
                }

                fn __set_key(&mut self, __key: #key_ident) {
                    #(self.#names = __key.#names;)*
                }

                fn __cache() -> &'static #p::ModelCache<Self> {
                    /// The heap of the key's fields that have one it can tell.
                    fn __ultracache_key_heap(__key: &#key_ident) -> usize {
                        #[allow(unused_imports)]
                        use #p::{WeighKey as _, WeighNoKey as _};
                        0usize #(+ (&&#p::KeyWeighProbe::of(&__key.#names))
                            .__ultracache_key_weigher()
                            .map_or(0, |__weigh| __weigh(&__key.#names)))*
                    }
                    static __ULTRACACHE_CACHE: #p::ModelCache<#ident> = #p::ModelCache::new(
                        __ULTRACACHE_NAME,
                        ::core::module_path!(),
                        #timeout,
                        #store,
                        #local,
                        __ultracache_key_heap,
                    );
                    &__ULTRACACHE_CACHE
                }

                fn __from_miss(__key: &#key_ident) -> ::core::option::Option<Self> {
                    #[allow(unused_imports)]
                    use #p::{HasFromMiss as _, NoFromMiss as _};
                    (&&#p::FromMissProbe::<#ident>::NEW).__ultracache_from_miss(__key)
                }

                fn __from_miss_async(
                    __key: &#key_ident,
                ) -> impl ::core::future::Future<Output = ::core::option::Option<Self>>
                       + ::core::marker::Send {
                    #[allow(unused_imports)]
                    use #p::{HasAsyncFromMiss as _, NoFromMissAsync as _, SyncFromMissAsync as _};
                    (&&&#p::FromMissProbe::<#ident>::NEW).__ultracache_from_miss_async(__key)
                }
            }

            fn __ultracache_assert_key_fields() {
                #(#asserts)*
            }

            #p::inventory::submit! {
                #p::ModelInfo {
                    kind: #p::Kind::new(__ULTRACACHE_NAME),
                    type_name: #type_name,
                    module: ::core::module_path!(),
                }
            }
        };
    })
}
