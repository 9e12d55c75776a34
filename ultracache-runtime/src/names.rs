//! Names read at run time: kinds named in requests, messages and stored
//! entries, and the names of caches. They live for the program, once each,
//! in bounded tables, so input from outside cannot grow memory without bound.

use crate::dep::{kind_hash, Dep, Kind, ModelInfo};

impl Dep {
    /// The dependency written as [`Display`](std::fmt::Display) writes it:
    /// `kind:id` or `kind`. An id that is a number is taken as written (the
    /// id key of an integer id); any other id is reduced like a string id.
    ///
    /// ```
    /// use ultracache::{Dep, Kind};
    /// const POST: Kind = Kind::new("blog.post");
    /// assert_eq!(Dep::parse("blog.post:42"), Some(Dep::object(POST, &42i64)));
    /// assert_eq!(Dep::parse("blog.post:-1"), Some(Dep::object(POST, &-1i64)));
    /// assert_eq!(Dep::parse("blog.post:hello"), Some(Dep::object(POST, "hello")));
    /// assert_eq!(Dep::parse("blog.post"), Some(Dep::kind(POST)));
    /// assert_eq!(Dep::parse(" "), None);
    ///
    /// // Kinds named by path, as the derives name them by default:
    /// const TAG: Kind = Kind::new("blog::models::Tag");
    /// assert_eq!(Dep::parse("blog::models::Tag"), Some(Dep::kind(TAG)));
    /// assert_eq!(Dep::parse("blog::models::Tag:7"), Some(Dep::object(TAG, &7i64)));
    /// ```
    ///
    /// A kind's name may hold `::` but not a single `:`, which is read as the
    /// start of the id.
    ///
    /// Kind names read this way are kept for the life of the program, at
    /// most 4,096 distinct ones of at most 1,024 bytes; past that, an
    /// unknown name parses as `None`. The program's own model kinds, and
    /// the kinds some cached entry depends on at the time, always parse.
    ///
    /// ```
    /// # use ultracache::Dep;
    /// assert_eq!(Dep::parse(&"k".repeat(1_025)), None);
    /// ```
    pub fn parse(text: &str) -> Option<Dep> {
        parse_any(text)?.ok()
    }
}

/// `text` as a dependency: `Ok` with its kind resolved ([`try_intern`]),
/// `Err` with a kind of the same hash that has no name, when this process
/// cannot resolve it — what an invalidation can still version (versions
/// are kept by hash), though no entry can be found under it. `None` for
/// blank text.
pub(crate) fn parse_any(text: &str) -> Option<Result<Dep, Dep>> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    // The id follows the last `:` that is not part of a `::`: kinds named
    // by path (`blog::models::Post`, the derives' default) keep theirs.
    let (name, id) = match text
        .rsplit_once(':')
        .filter(|(kind, _)| !kind.is_empty() && !kind.ends_with(':'))
    {
        Some((kind, id)) => (kind, Some(id)),
        None => (text, None),
    };
    let of = |kind: Kind| match id {
        Some(id) => match (id.parse::<u64>(), id.parse::<i64>()) {
            (Ok(key), _) => Dep::object_key(kind, key),
            (_, Ok(n)) => Dep::object(kind, &n),
            _ => Dep::object(kind, id),
        },
        None => Dep::kind(kind),
    };
    Some(match try_intern(name) {
        Some(name) => Ok(of(Kind::new(name))),
        None => Err(of(Kind::unnamed(kind_hash(name)))),
    })
}

/// Names read at run time (from Redis, a URL, the command line) live for the
/// program, once each: kinds are a handful. A name resolves, in order, to a
/// kind of the program's own models, a name already kept, or a kind some
/// entry of this process depends on now; failing those it is kept, while at
/// most [`MAX_NAMES`] distinct names of at most [`MAX_NAME_LEN`] bytes are,
/// so input from outside cannot grow the table without bound. Past that (or
/// for a longer name that no entry depends on) the answer is `None`.
pub(crate) fn try_intern(name: &str) -> Option<&'static str> {
    // The kinds of the program's own models need no room in the table.
    if let Some(model) = inventory::iter::<ModelInfo>
        .into_iter()
        .find(|m| m.kind.name() == name)
    {
        return Some(model.kind.name());
    }
    let in_use = || {
        crate::registry::registry()
            .kind_named(name, kind_hash(name))
            .map(|kind| kind.name())
    };
    if name.len() > MAX_NAME_LEN {
        return in_use();
    }
    static KINDS: Names = Names::new();
    KINDS.get_or_keep(name, in_use)
}

/// A bounded table of names kept for the life of the program.
struct Names(std::sync::Mutex<Vec<&'static str>>);

impl Names {
    const fn new() -> Self {
        Names(std::sync::Mutex::new(Vec::new()))
    }

    /// `name` as kept: found, else what `elsewhere` finds, else kept now if
    /// there is room.
    fn get_or_keep(
        &self,
        name: &str,
        elsewhere: impl FnOnce() -> Option<&'static str>,
    ) -> Option<&'static str> {
        let mut names = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = names.iter().find(|n| **n == name) {
            return Some(n);
        }
        if let Some(found) = elsewhere() {
            return Some(found);
        }
        if names.len() >= MAX_NAMES {
            return None;
        }
        let kept: &'static str = Box::leak(name.to_owned().into_boxed_str());
        names.push(kept);
        Some(kept)
    }
}

/// How many distinct names read at run time are kept.
pub(crate) const MAX_NAMES: usize = 4096;

/// The longest name read at run time that is kept, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 1024;

/// A cache's name, kept for the life of the program in a table of its own:
/// names read from outside (kinds in requests and messages) never take a
/// cache's room. Past [`MAX_NAMES`] names, one shared placeholder.
#[cfg_attr(not(feature = "axum"), allow(dead_code))]
pub(crate) fn intern(name: &str) -> &'static str {
    static CACHES: Names = Names::new();
    CACHES
        .get_or_keep(name, || None)
        .unwrap_or("(too many names)")
}
