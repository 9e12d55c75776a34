//! Models: the [`Trackable`] trait and the [`Models`] walk over values that
//! hold models.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::rc::Rc;
use std::sync::Arc;

use crate::dep::{Dep, Kind};

/// A model whose reads are recorded and whose writes invalidate.
///
/// Derive it: `#[derive(Trackable)]` takes the id from the field named `id` (or
/// the one marked `#[trackable(id)]`) and the kind from
/// `#[trackable(kind = "…")]`, defaulting to the type's name.
///
/// ```
/// use ultracache::Trackable;
///
/// #[derive(Clone, Trackable)]
/// #[trackable(kind = "blog.post")]
/// struct Post { id: i64, title: String }
///
/// let post = Post { id: 42, title: "Hello".into() };
/// assert_eq!(post.dep().to_string(), "blog.post:42");
/// assert_eq!(<Post as Trackable>::KIND.name(), "blog.post");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a model: it does not implement `Trackable`",
    label = "not `Trackable`",
    note = "add `#[derive(ultracache::Trackable)]` to the type"
)]
pub trait Trackable {
    /// The id's type: integers, strings or any `Hash + Eq + Clone` type.
    type Id: Hash + Eq + Clone;

    /// The kind every object of this type is recorded under.
    const KIND: Kind;

    /// This object's id.
    fn id(&self) -> &Self::Id;

    /// The dependency on this one object.
    fn dep(&self) -> Dep {
        Dep::object(Self::KIND, self.id())
    }

    /// The URL paths that show this object (see
    /// [`DependentPaths`](crate::DependentPaths)); none by default. The derive
    /// returns the type's `DependentPaths` when it has one.
    fn dependent_paths(&self) -> Vec<String> {
        Vec::new()
    }

    /// Where rows of this model live, for change capture
    /// (`ultracache::db::{sqlite, postgres}::Table::model`): declared with
    /// `#[trackable(table = "…")]` on the struct and
    /// `#[trackable(belongs_to = Model)]` on its foreign-key fields; none by
    /// default.
    fn mappings() -> Vec<Mapping>
    where
        Self: Sized,
    {
        Vec::new()
    }
}

/// One captured column of a model's table: a change to a row refreshes the
/// object of `kind` whose id the column holds (before and after the change).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The table.
    pub table: &'static str,
    /// The column.
    pub column: &'static str,
    /// The kind of object the column's value names.
    pub kind: Kind,
    /// The row *is* that object (its key column): a change also refreshes
    /// every list of the kind. Otherwise the row belongs to it (a comment's
    /// `post_id`).
    pub is_key: bool,
}

/// A value that holds models: a model, a reference to one, `Option`, `Vec`,
/// slices, arrays, maps (their values), `Result` (its `Ok`), `Box`, `Rc`,
/// `Arc` and tuples of these.
///
/// `#[tracks]` records every model in the value it returns. A collection also
/// records the kind itself, and so does an `Option` that is `None`: a list or a
/// lookup that found nothing must die when an object of that kind is created.
///
/// ```
/// use ultracache::{Models, Trackable};
///
/// #[derive(Trackable)]
/// struct Post { id: i64 }
///
/// let mut deps = Vec::new();
/// vec![Post { id: 1 }, Post { id: 2 }].visit_deps(&mut |d| deps.push(d.to_string()));
/// assert_eq!(deps, ["Post:1", "Post:2", "Post"]);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` holds no models that can be recorded",
    label = "no `Models` impl",
    note = "models derive `Trackable`; containers of models (Vec, Option, Result, tuples, …) hold them"
)]
pub trait Models {
    /// Calls `f` with every dependency this value stands for.
    fn visit_deps(&self, f: &mut dyn FnMut(Dep));

    /// Calls `f` with the kinds of model this type can hold (used for empty
    /// collections and `None`).
    fn visit_kinds(f: &mut dyn FnMut(Kind));

    /// Calls `f` with the dependent paths of every model of `kind` in this
    /// value. Containers pass it on; models answer for themselves.
    fn visit_paths(&self, kind: Kind, f: &mut dyn FnMut(String)) {
        let _ = (kind, f);
    }
}

/// Implements [`Models`] for a [`Trackable`] type; the derive uses it.
#[doc(hidden)]
pub fn model_visit_deps<T: Trackable>(value: &T, f: &mut dyn FnMut(Dep)) {
    f(value.dep());
}

/// Implements [`Models::visit_paths`] for a [`Trackable`] type; the derive uses it.
#[doc(hidden)]
pub fn model_visit_paths<T: Trackable>(value: &T, kind: Kind, f: &mut dyn FnMut(String)) {
    if T::KIND == kind {
        for path in value.dependent_paths() {
            f(path);
        }
    }
}

impl<T: Models + ?Sized> Models for &T {
    fn visit_deps(&self, f: &mut dyn FnMut(Dep)) {
        (**self).visit_deps(f);
    }
    fn visit_paths(&self, kind: Kind, f: &mut dyn FnMut(String)) {
        (**self).visit_paths(kind, f);
    }
    fn visit_kinds(f: &mut dyn FnMut(Kind)) {
        T::visit_kinds(f);
    }
}

impl<T: Models + ?Sized> Models for &mut T {
    fn visit_deps(&self, f: &mut dyn FnMut(Dep)) {
        (**self).visit_deps(f);
    }
    fn visit_paths(&self, kind: Kind, f: &mut dyn FnMut(String)) {
        (**self).visit_paths(kind, f);
    }
    fn visit_kinds(f: &mut dyn FnMut(Kind)) {
        T::visit_kinds(f);
    }
}

macro_rules! pointer_models {
    ($($ptr:ident),*) => {$(
        impl<T: Models + ?Sized> Models for $ptr<T> {
            fn visit_deps(&self, f: &mut dyn FnMut(Dep)) {
                (**self).visit_deps(f);
            }
            fn visit_paths(&self, kind: Kind, f: &mut dyn FnMut(String)) {
                (**self).visit_paths(kind, f);
            }
            fn visit_kinds(f: &mut dyn FnMut(Kind)) {
                T::visit_kinds(f);
            }
        }
    )*};
}
pointer_models!(Box, Rc, Arc);

impl<T: Models> Models for Option<T> {
    fn visit_deps(&self, f: &mut dyn FnMut(Dep)) {
        match self {
            Some(v) => v.visit_deps(f),
            None => T::visit_kinds(&mut |k| f(Dep::kind(k))),
        }
    }
    fn visit_paths(&self, kind: Kind, f: &mut dyn FnMut(String)) {
        if let Some(v) = self {
            v.visit_paths(kind, f);
        }
    }
    fn visit_kinds(f: &mut dyn FnMut(Kind)) {
        T::visit_kinds(f);
    }
}

impl<T: Models, E> Models for Result<T, E> {
    fn visit_deps(&self, f: &mut dyn FnMut(Dep)) {
        if let Ok(v) = self {
            v.visit_deps(f);
        }
    }
    fn visit_paths(&self, kind: Kind, f: &mut dyn FnMut(String)) {
        if let Ok(v) = self {
            v.visit_paths(kind, f);
        }
    }
    fn visit_kinds(f: &mut dyn FnMut(Kind)) {
        T::visit_kinds(f);
    }
}

fn visit_collection<'a, T: Models + 'a>(
    items: impl IntoIterator<Item = &'a T>,
    f: &mut dyn FnMut(Dep),
) {
    for item in items {
        item.visit_deps(f);
    }
    T::visit_kinds(&mut |k| f(Dep::kind(k)));
}

impl<T: Models> Models for [T] {
    fn visit_paths(&self, kind: Kind, f: &mut dyn FnMut(String)) {
        for item in self.iter() {
            item.visit_paths(kind, f);
        }
    }
    fn visit_deps(&self, f: &mut dyn FnMut(Dep)) {
        visit_collection(self, f);
    }
    fn visit_kinds(f: &mut dyn FnMut(Kind)) {
        T::visit_kinds(f);
    }
}

impl<T: Models, const N: usize> Models for [T; N] {
    fn visit_paths(&self, kind: Kind, f: &mut dyn FnMut(String)) {
        for item in self.iter() {
            item.visit_paths(kind, f);
        }
    }
    fn visit_deps(&self, f: &mut dyn FnMut(Dep)) {
        visit_collection(self, f);
    }
    fn visit_kinds(f: &mut dyn FnMut(Kind)) {
        T::visit_kinds(f);
    }
}

impl<T: Models> Models for Vec<T> {
    fn visit_paths(&self, kind: Kind, f: &mut dyn FnMut(String)) {
        for item in self.iter() {
            item.visit_paths(kind, f);
        }
    }
    fn visit_deps(&self, f: &mut dyn FnMut(Dep)) {
        visit_collection(self, f);
    }
    fn visit_kinds(f: &mut dyn FnMut(Kind)) {
        T::visit_kinds(f);
    }
}

impl<T: Models> Models for VecDeque<T> {
    fn visit_paths(&self, kind: Kind, f: &mut dyn FnMut(String)) {
        for item in self.iter() {
            item.visit_paths(kind, f);
        }
    }
    fn visit_deps(&self, f: &mut dyn FnMut(Dep)) {
        visit_collection(self, f);
    }
    fn visit_kinds(f: &mut dyn FnMut(Kind)) {
        T::visit_kinds(f);
    }
}

impl<K, T: Models, S> Models for HashMap<K, T, S> {
    fn visit_paths(&self, kind: Kind, f: &mut dyn FnMut(String)) {
        for item in self.values() {
            item.visit_paths(kind, f);
        }
    }
    fn visit_deps(&self, f: &mut dyn FnMut(Dep)) {
        visit_collection(self.values(), f);
    }
    fn visit_kinds(f: &mut dyn FnMut(Kind)) {
        T::visit_kinds(f);
    }
}

impl<K, T: Models> Models for BTreeMap<K, T> {
    fn visit_paths(&self, kind: Kind, f: &mut dyn FnMut(String)) {
        for item in self.values() {
            item.visit_paths(kind, f);
        }
    }
    fn visit_deps(&self, f: &mut dyn FnMut(Dep)) {
        visit_collection(self.values(), f);
    }
    fn visit_kinds(f: &mut dyn FnMut(Kind)) {
        T::visit_kinds(f);
    }
}

macro_rules! tuple_models {
    ($(($($t:ident $i:tt),+))*) => {$(
        impl<$($t: Models),+> Models for ($($t,)+) {
            fn visit_deps(&self, f: &mut dyn FnMut(Dep)) {
                $(self.$i.visit_deps(f);)+
            }
            fn visit_kinds(f: &mut dyn FnMut(Kind)) {
                $($t::visit_kinds(f);)+
            }
            fn visit_paths(&self, kind: Kind, f: &mut dyn FnMut(String)) {
                $(self.$i.visit_paths(kind, f);)+
            }
        }
    )*};
}
tuple_models! {
    (A 0)
    (A 0, B 1)
    (A 0, B 1, C 2)
    (A 0, B 1, C 2, D 3)
    (A 0, B 1, C 2, D 3, E 4)
    (A 0, B 1, C 2, D 3, E 4, F 5)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7)
}

macro_rules! plain_models {
    ($($t:ty),*) => {$(
        /// Plain data holds no models; it may stand beside them in a tuple.
        impl Models for $t {
            fn visit_deps(&self, _: &mut dyn FnMut(Dep)) {}
            fn visit_kinds(_: &mut dyn FnMut(Kind)) {}
        }
    )*};
}
plain_models!(
    (),
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    str,
    String
);
