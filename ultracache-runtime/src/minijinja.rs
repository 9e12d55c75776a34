//! Template fragment caching for minijinja: `{% call ultracache(…) %}` blocks
//! that nest, and models that record what the template reads.
//!
//! ```
//! use minijinja::{context, Environment};
//! use ultracache::{minijinja::model, Trackable};
//!
//! #[derive(Clone, Debug, Trackable, serde::Serialize)]
//! struct Promo { id: u32, title: String }
//!
//! let mut env = Environment::new();
//! ultracache::minijinja::register(&mut env);
//! env.add_template("page", r#"
//! {%- call ultracache(86400, "sidebar", user_id) -%}
//!   {%- for promo in promotions %}[{{ promo.title }}]{% endfor -%}
//! {%- endcall -%}"#).unwrap();
//!
//! let promotions = ultracache::minijinja::models(vec![Promo { id: 1, title: "Sale".into() }]);
//! let html = env.get_template("page").unwrap()
//!     .render(context! { user_id => 7, promotions }).unwrap();
//! assert_eq!(html, "[Sale]");
//! ```
//!
//! Arguments of `ultracache(timeout, "name", values…, name=default…)`:
//! - `timeout`: whole seconds; `none` for no expiry.
//! - `"name"` and the positional values make the key (a missing variable is a
//!   stable placeholder).
//! - `var=default` keyword arguments name context variables the block varies on,
//!   with a default when the variable is missing. An enclosing block varies on
//!   them too (its output contains this block's), unless `local=true`: the
//!   enclosing block learns the names once and keeps them with its entry —
//!   nothing grows beyond the store's capacity.
//!
//! Blocks are cached only for GET and HEAD when a request with a `method` is in
//! the context (see [`Options`]).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::Arc;

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Rest};
use minijinja::{Environment, Error, ErrorKind, State, Value};

use crate::cache::{CacheKey, CacheValue};
use crate::dep::Dep;
use crate::fragment::ByTimeout;
use crate::recorder::{record, track_dep, track_value};
use crate::trackable::{Models, Trackable};

/// How blocks behave; see [`register_with`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// The context variable holding the request (default `"request"`). When it
    /// has a `method` other than GET or HEAD, blocks render without the cache.
    pub request_variable: Option<String>,
    /// The function's name in templates (default `"ultracache"`).
    pub function_name: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            request_variable: Some("request".into()),
            function_name: "ultracache".into(),
        }
    }
}

/// Registers the `ultracache` block function with the default [`Options`].
pub fn register(env: &mut Environment<'_>) {
    register_with(env, Options::default());
}

/// Registers the block function with these options.
pub fn register_with(env: &mut Environment<'_>, options: Options) {
    let name = options.function_name.clone();
    let options = Arc::new(options);
    env.add_function(
        name,
        move |state: &mut State<'_, '_>, args: Rest<Value>, kwargs: Kwargs| {
            block(state, &args, &kwargs, &options)
        },
    );
}

/// What a block's key keeps: the output, or the variables the output varies
/// on (learned from the blocks inside it).
#[derive(Clone, Debug)]
enum Stored {
    Varies(Arc<[(String, Value)]>),
    Html(Arc<str>),
}

static BLOCKS: ByTimeout<Stored> = ByTimeout::new("template-block");

thread_local! {
    /// For each block being rendered on this thread: the variables the blocks
    /// inside it vary on.
    static OPEN: RefCell<Vec<Vec<(String, Value)>>> = const { RefCell::new(Vec::new()) };
}

/// A stable text for a value in a key; a missing variable has a placeholder.
fn key_part(key: &mut String, value: &Value) {
    if value.is_undefined() {
        key.push_str("\u{1}undefined");
    } else {
        let _ = write!(key, "{value:?}");
    }
    key.push('\u{1f}');
}

fn varies_key(base: &str, state: &State<'_, '_>, vars: &[(String, Value)]) -> String {
    let mut key = base.to_owned();
    key.push('\u{1e}');
    for (name, default) in vars {
        key.push_str(name);
        key.push('=');
        let value = state.lookup(name).filter(|v| !v.is_undefined());
        key_part(&mut key, value.as_ref().unwrap_or(default));
    }
    key
}

fn bypass(state: &State<'_, '_>, options: &Options) -> bool {
    let Some(var) = &options.request_variable else {
        return false;
    };
    let Some(request) = state.lookup(var) else {
        return false;
    };
    match request
        .get_attr("method")
        .ok()
        .filter(|m| !m.is_undefined())
    {
        Some(method) => {
            let method = method.to_string().to_ascii_uppercase();
            method != "GET" && method != "HEAD"
        }
        None => false,
    }
}

/// Adds `vars` to what the enclosing block (if any) varies on.
fn inherit(vars: &[(String, Value)]) {
    OPEN.with(|open| {
        if let Some(parent) = open.borrow_mut().last_mut() {
            for var in vars {
                if !parent.iter().any(|(n, _)| *n == var.0) {
                    parent.push(var.clone());
                }
            }
        }
    });
}

fn render(state: &mut State<'_, '_>, caller: &Value) -> Result<String, Error> {
    Ok(caller.call(state, &[])?.to_string())
}

fn block(
    state: &mut State<'_, '_>,
    args: &[Value],
    kwargs: &Kwargs,
    options: &Options,
) -> Result<Value, Error> {
    let caller: Value = kwargs.get("caller")?;
    let local: Option<bool> = kwargs.get("local")?;
    let mut vars: Vec<(String, Value)> = Vec::new();
    for name in kwargs.args() {
        if name != "caller" && name != "local" {
            vars.push((name.to_owned(), kwargs.peek::<Value>(name)?));
        }
    }
    for (name, _) in &vars {
        let _: Value = kwargs.get(name)?;
    }
    kwargs.assert_all_used()?;
    let (timeout, rest) = args.split_first().ok_or_else(|| {
        Error::new(
            ErrorKind::MissingArgument,
            "ultracache(timeout, \"name\", …): the timeout is missing",
        )
    })?;
    let timeout = if timeout.is_none() {
        None
    } else {
        let secs = u64::try_from(timeout.clone()).map_err(|_| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("ultracache: the timeout must be whole seconds or none, not {timeout}"),
            )
        })?;
        Some(std::time::Duration::from_secs(secs))
    };

    // This block's own variables make the enclosing block vary too.
    let local = local.unwrap_or(false);
    if !local {
        inherit(&vars);
    }

    if bypass(state, options) {
        return Ok(Value::from_safe_string(render(state, &caller)?));
    }

    let mut base = String::from("block\u{1f}");
    for value in rest {
        key_part(&mut base, value);
    }
    for (name, default) in &vars {
        base.push_str(name);
        base.push('=');
        let value = state.lookup(name).filter(|v| !v.is_undefined());
        key_part(&mut base, value.as_ref().unwrap_or(default));
    }
    let cache = BLOCKS.get(timeout);

    let key = match cache.get(&base) {
        Some(Stored::Html(html)) => return Ok(Value::from_safe_string(html.to_string())),
        Some(Stored::Varies(inner)) => {
            if !local {
                inherit(&inner);
            }
            let key = varies_key(&base, state, &inner);
            if let Some(Stored::Html(html)) = cache.get(&key) {
                return Ok(Value::from_safe_string(html.to_string()));
            }
            Some((key, inner))
        }
        None => None,
    };

    // A miss: render the body, recording what it reads and what the blocks
    // inside it vary on.
    OPEN.with(|open| open.borrow_mut().push(Vec::new()));
    let (html, read) = record(|| render(state, &caller));
    let inner = OPEN
        .with(|open| open.borrow_mut().pop())
        .unwrap_or_default();
    let html: Arc<str> = Arc::from(html?);
    if !local {
        inherit(&inner);
    }

    if inner.is_empty() {
        cache.insert_recorded(base, Stored::Html(Arc::clone(&html)), &read);
    } else {
        let inner: Arc<[(String, Value)]> = match key {
            Some((_, known)) if known.len() >= inner.len() => known,
            _ => Arc::from(inner),
        };
        let variant = varies_key(&base, state, &inner);
        cache.insert_recorded(variant, Stored::Html(Arc::clone(&html)), &read);
        cache.insert_recorded(base, Stored::Varies(inner), &read);
    }
    Ok(Value::from_safe_string(html.to_string()))
}

/// A model in a template: reading any of its attributes records it (and the
/// models it relates to) as a dependency of the blocks being rendered.
#[derive(Debug)]
struct TrackedModel<T> {
    model: T,
    fields: Value,
}

impl<T> Object for TrackedModel<T>
where
    T: Models + std::fmt::Debug + Send + Sync + 'static,
{
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        track_value(&self.model);
        self.fields.get_item(key).ok().filter(|v| !v.is_undefined())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        track_value(&self.model);
        match self.fields.try_iter() {
            Ok(keys) => Enumerator::Values(keys.collect()),
            Err(_) => Enumerator::Empty,
        }
    }
}

/// Wraps a model for a template context: its fields are readable as usual,
/// and reading one records the model.
///
/// The model must implement `serde::Serialize` (its fields become the
/// template's view of it) and `Debug`.
pub fn model<T>(model: T) -> Value
where
    T: Trackable + Models + serde::Serialize + std::fmt::Debug + Send + Sync + 'static,
{
    let fields = Value::from(minijinja::value::Serde(&model));
    Value::from_object(TrackedModel { model, fields })
}

/// A list of models for a template context: iterating it records the kind
/// (so creating an object re-renders the blocks that listed them), and each
/// item records itself when read.
#[derive(Debug)]
struct TrackedList {
    kinds: Vec<crate::dep::Kind>,
    items: Vec<Value>,
}

impl Object for TrackedList {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.record_kinds();
        let index = usize::try_from(key.clone()).ok()?;
        self.items.get(index).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.record_kinds();
        Enumerator::Values(self.items.clone())
    }
}

impl TrackedList {
    fn record_kinds(&self) {
        for kind in &self.kinds {
            track_dep(Dep::kind(*kind));
        }
    }
}

/// Wraps a list of models for a template context (see [`model`]).
pub fn models<T, I>(items: I) -> Value
where
    I: IntoIterator<Item = T>,
    T: Trackable + Models + serde::Serialize + std::fmt::Debug + Send + Sync + 'static,
{
    let mut kinds = Vec::new();
    T::visit_kinds(&mut |k| kinds.push(k));
    Value::from_object(TrackedList {
        kinds,
        items: items.into_iter().map(model).collect(),
    })
}

// The block caches hold `Stored`; keep the bounds visible to the compiler.
const _: fn() = || {
    fn is_key<K: CacheKey>() {}
    fn is_value<V: CacheValue>() {}
    is_key::<String>();
    is_value::<Stored>();
};
