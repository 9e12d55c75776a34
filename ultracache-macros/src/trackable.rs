//! `#[derive(Trackable)]`: a model's kind and id.

use darling::ast::{Data, Style};
use darling::util::{Flag, Ignored};
use darling::{FromDeriveInput, FromField};
use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, Path, Type};

use crate::util::{private, Errors};

#[derive(FromDeriveInput)]
#[darling(attributes(trackable), supports(struct_named, struct_tuple))]
pub(crate) struct TrackableInput {
    ident: Ident,
    generics: syn::Generics,
    data: Data<Ignored, TrackableField>,
    /// The kind's name; the type's name when not given.
    #[darling(default)]
    kind: Option<String>,
    /// The table its rows live in (for change capture).
    #[darling(default)]
    table: Option<syn::LitStr>,
    #[darling(default, rename = "crate")]
    krate: Option<Path>,
}

#[derive(FromField)]
#[darling(attributes(trackable))]
pub(crate) struct TrackableField {
    ident: Option<Ident>,
    ty: Type,
    /// This field is the id.
    #[darling(default)]
    id: Flag,
    /// Reading this object also reads this related model (or models).
    #[darling(default)]
    related: Flag,
    /// The row belongs to the object of this model whose id the field holds.
    #[darling(default)]
    belongs_to: Option<Path>,
    /// The field's column, when not named like the field.
    #[darling(default)]
    column: Option<syn::LitStr>,
}

/// Models are structs: says so on the `enum` or `union` keyword and name.
pub(crate) fn check_shape(input: &syn::DeriveInput) -> syn::Result<()> {
    let (keyword, what) = match &input.data {
        syn::Data::Struct(_) => return Ok(()),
        syn::Data::Enum(e) => (e.enum_token.span, "an enum"),
        syn::Data::Union(u) => (u.union_token.span, "a union"),
    };
    let span = keyword
        .join(input.ident.span())
        .unwrap_or(input.ident.span());
    Err(syn::Error::new(
        span,
        format!("`Trackable` models are structs with an id field, not {what}"),
    ))
}

pub(crate) fn expand(input: TrackableInput) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let Data::Struct(fields) = &input.data else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "`Trackable` models are structs",
        ));
    };
    let member = |i: usize, f: &TrackableField| match &f.ident {
        Some(ident) => quote!(#ident),
        None => {
            let i = syn::Index::from(i);
            quote!(#i)
        }
    };
    let marked: Vec<_> = fields
        .iter()
        .enumerate()
        .filter(|(_, f)| f.id.is_present())
        .collect();
    for (_, f) in marked.iter().skip(1) {
        errors.push(syn::Error::new(
            f.id.span(),
            "`#[trackable(id)]` marks the one id field: it is given twice",
        ));
    }
    let id = match marked.first() {
        Some(&(i, f)) => Some((i, f)),
        None => fields
            .iter()
            .enumerate()
            .find(|(_, f)| f.ident.as_ref().is_some_and(|i| i == "id")),
    };
    let Some((id_index, id_field)) = id else {
        let hint = if fields.style == Style::Tuple {
            "mark the id field with `#[trackable(id)]`"
        } else {
            "add a field named `id`, or mark the id field with `#[trackable(id)]`"
        };
        errors.spanned(
            &input.ident,
            format!("`Trackable` needs an id field: {hint}"),
        );
        errors.finish()?;
        unreachable!("errors were pushed");
    };
    if let Some(table) = &input.table {
        if table.value().is_empty() {
            errors.push(syn::Error::new(table.span(), "the table's name is empty"));
        }
    }
    for f in fields.iter() {
        if let Some(column) = &f.column {
            if column.value().is_empty() {
                errors.push(syn::Error::new(column.span(), "the column's name is empty"));
            } else if input.table.is_none() {
                errors.push(syn::Error::new(
                    column.span(),
                    "a column is captured from a table: add `#[trackable(table = \"…\")]` to the struct",
                ));
            }
        }
        if let Some(model) = &f.belongs_to {
            if input.table.is_none() {
                errors.push(syn::Error::new(
                    model.span(),
                    "`belongs_to` maps a column of the model's table: add `#[trackable(table = \"…\")]` to the struct",
                ));
            }
            if f.ident.is_none() && f.column.is_none() {
                errors.push(syn::Error::new(
                    model.span(),
                    "a tuple field has no column name: add `column = \"…\"`",
                ));
            }
        }
    }
    if input.table.is_some() && id_field.ident.is_none() && id_field.column.is_none() {
        errors.spanned(
            &id_field.ty,
            "a tuple field has no column name: add `#[trackable(id, column = \"…\")]`",
        );
    }
    errors.finish()?;

    let p = private(input.krate.as_ref());
    let ident = &input.ident;
    let kind = input.kind.clone().unwrap_or_else(|| ident.to_string());
    let id_ty = &id_field.ty;
    let id_member = member(id_index, id_field);
    let id_ty = quote_spanned!(id_ty.span()=> #id_ty);
    let related = fields
        .iter()
        .enumerate()
        .filter(|(_, f)| f.related.is_present())
        .map(|(i, f)| {
            let m = member(i, f);
            quote_spanned!(f.ty.span()=> #p::Models::visit_deps(&self.#m, __ultracache_f);)
        });
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let type_name = ident.to_string();
    let column = |f: &TrackableField| match (&f.column, &f.ident) {
        (Some(c), _) => c.value(),
        (None, Some(i)) => i.to_string().trim_start_matches("r#").to_owned(),
        (None, None) => String::new(),
    };
    let mappings = input.table.as_ref().map(|table| {
        let key = column(id_field);
        let belongs = fields.iter().filter_map(|f| {
            let model = f.belongs_to.as_ref()?;
            let col = column(f);
            let kind = quote_spanned!(model.span()=> <#model as #p::Trackable>::KIND);
            Some(quote! {
                #p::Mapping { table: #table, column: #col, kind: #kind, is_key: false },
            })
        });
        quote! {
            fn mappings() -> #p::Vec<#p::Mapping> {
                #p::Vec::from([
                    #p::Mapping {
                        table: #table,
                        column: #key,
                        kind: <Self as #p::Trackable>::KIND,
                        is_key: true,
                    },
                    #(#belongs)*
                ])
            }
        }
    });
    Ok(quote! {
        #[allow(non_upper_case_globals, unused_qualifications)]
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #p::Trackable for #ident #ty_generics #where_clause {
                type Id = #id_ty;
                const KIND: #p::Kind = #p::Kind::new(#kind);
                fn id(&self) -> &Self::Id {
                    &self.#id_member
                }
                fn dependent_paths(&self) -> #p::Vec<#p::String> {
                    #[allow(unused_imports)]
                    use #p::{HasPaths as _, NoPaths as _};
                    (&&#p::PathsProbe(self)).__ultracache_paths()
                }
                #mappings
            }

            #[automatically_derived]
            impl #impl_generics #p::Models for #ident #ty_generics #where_clause {
                fn visit_deps(&self, __ultracache_f: &mut dyn ::core::ops::FnMut(#p::Dep)) {
                    #p::model_visit_deps(self, __ultracache_f);
                    #(#related)*
                }
                fn visit_kinds(__ultracache_f: &mut dyn ::core::ops::FnMut(#p::Kind)) {
                    __ultracache_f(<Self as #p::Trackable>::KIND);
                }
                fn visit_paths(
                    &self,
                    __ultracache_kind: #p::Kind,
                    __ultracache_f: &mut dyn ::core::ops::FnMut(#p::String),
                ) {
                    #p::model_visit_paths(self, __ultracache_kind, __ultracache_f);
                }
            }

            #p::inventory::submit! {
                #p::ModelInfo {
                    kind: #p::Kind::new(#kind),
                    type_name: #type_name,
                    module: ::core::module_path!(),
                }
            }
        };
    })
}
