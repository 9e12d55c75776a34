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
//! Arguments of `ultracache(timeout, "name", values…, name=default…, local=true)`:
//! - `timeout`: whole seconds; `none` for no expiry. Each entry expires on
//!   its own: any number of distinct timeouts share one cache.
//! - `"name"` and the positional values make the key (a missing variable is a
//!   stable placeholder).
//! - `stale_if_error=seconds`: when rendering the block again after its
//!   timeout fails (a function it calls returns an error), the last output is
//!   used instead, for that many seconds past the timeout — never once
//!   something it read was written (see [`Cache::stale_if_error`](crate::Cache::stale_if_error));
//!   counted in the `template-block-graced` cache's `served_stale`.
//! - `var=default` keyword arguments name context variables the block varies
//!   on. When the variable is missing, a body that declares it
//!   (`{% call(x) ultracache(500, "test", x=10) %}`) renders as if it were the
//!   default, and shares the entry with a render where it really is; a body
//!   that does not declare it sees it missing, and that render is kept apart
//!   (a default never stands for a value the body did not see).
//!
//! The rules of nesting (django-better-cache's, made exact):
//! - **Keys pass down, at any depth.** A block's key includes the key of the
//!   block around it, so an inner block re-renders when anything an outer
//!   block varies on changes.
//! - **Keyword keys pass up.** An enclosing block varies on the keyword
//!   variables of the blocks inside it (and theirs, at any depth), unless the
//!   inner block says `local=true`. It learns them when it renders them, keeps
//!   them in a record of its own that invalidating data never clears, and
//!   only adds to them: a render that skips a branch forgets nothing. Each
//!   entry is stored under the names known when it was rendered, so an entry
//!   is never served for a set of names it was not keyed on; a record that is
//!   evicted starts a new generation, never reaching the old entries. A block
//!   learns what a branch varies on the first time it renders that branch.
//! - **Positional keys pass down only.** `ultracache(500, "inner", y)` receives
//!   the value of `y`, not its name, so the block around it cannot look it up
//!   before rendering: that enclosing block is rendered every time (the inner
//!   one still comes from the cache) rather than serve an output keyed on the
//!   wrong `y`. Write `y=none` to let the enclosing block cache and vary on it,
//!   or `local=true` to let it not vary. So better-cache's example
//!
//!   ```jinja
//!   {% call ultracache(500, "outer", x=none) %}
//!     y = {{ y }}
//!     {% call ultracache(500, "inner", y=none) %}x = {{ x }}{% endcall %}
//!   {% endcall %}
//!   ```
//!
//!   re-renders both blocks when either `x` or `y` changes, each cached.
//! - A block learns at most 32 names; past that it is rendered every time.
//! - The key also holds the template's name and its escaping mode: a block of
//!   a `.txt` template is never served inside an `.html` one.
//! - Concurrent first renders of a block render it once; the others wait for
//!   it (the cache's single flight).
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
use crate::recorder::{track_dep, track_value};
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

/// A keyword variable a block varies on.
#[derive(Clone, Debug, PartialEq)]
struct Var {
    name: String,
    default: Value,
    /// The block's body declares it (`{% call(x) … %}`), so the body sees
    /// the default when the context lacks the variable.
    declared: bool,
}

impl Var {
    /// The value the body sees: the context's, else the default when the
    /// body declares it, else missing.
    fn value(&self, state: &State<'_, '_>) -> Value {
        match state.lookup(&self.name).filter(|v| !v.is_undefined()) {
            Some(v) => v,
            None if self.declared => self.default.clone(),
            None => Value::UNDEFINED,
        }
    }
}

/// What a block learned from the blocks inside it, kept under its record key
/// (with no dependencies: invalidating data never makes it forget).
#[derive(Debug)]
struct Learned {
    /// Its variants are stored under this generation: a record evicted and
    /// made again never reaches a variant stored under the old one.
    generation: u64,
    /// The keyword variables of the blocks inside it (not `local`): its
    /// variants are keyed on their values too. Only grows.
    names: Vec<Var>,
    /// A block inside it is keyed on positional values (which cannot be
    /// looked up before rendering), or it learned more than [`MAX_LEARNED`]
    /// names: its output is not cached (its inner blocks still are).
    opaque: bool,
}

/// Learned names past which a block is rendered every time instead.
const MAX_LEARNED: usize = 32;

/// What the block cache holds: a block's record, or one of its variants.
#[derive(Clone, Debug)]
enum Stored {
    Learned(Arc<Learned>),
    Html(Arc<str>),
    /// The output of a block with `stale_if_error`, and the last moment it
    /// may stand in for a failed render (its timeout and grace over).
    Graced {
        html: Arc<str>,
        until: Option<std::time::Instant>,
    },
}

/// Blocks with `stale_if_error`: their outputs are kept past their timeout
/// for the longest grace a block may ask (each block's own is checked when
/// a kept output is offered).
static GRACED_BLOCKS: crate::cache::Cache<String, Stored> =
    crate::cache::Cache::new("template-block-graced")
        .module("ultracache")
        .forever()
        .stale_if_error(MAX_GRACE);

/// The longest `stale_if_error` a block may ask: a week.
const MAX_GRACE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// A block's output as stored: with its grace's end when it has one.
fn output(
    html: Arc<str>,
    timeout: Option<std::time::Duration>,
    grace: Option<std::time::Duration>,
) -> Stored {
    match grace {
        Some(grace) => Stored::Graced {
            html,
            until: timeout
                .and_then(|t| t.checked_add(grace.min(MAX_GRACE)))
                .and_then(|t| std::time::Instant::now().checked_add(t)),
        },
        None => Stored::Html(html),
    }
}

/// What a block's render counts as: stored when it is a plain output; a
/// failure (that a kept output may answer) only when the render failed.
struct BlockOutcome;

impl crate::cache::Outcome<Result<Stored, Unstored>> for BlockOutcome {
    type Value = Stored;
    fn value(result: &Result<Stored, Unstored>) -> Option<&Stored> {
        result.as_ref().ok()
    }
    fn wrap(value: Stored) -> Result<Stored, Unstored> {
        Ok(value)
    }
    fn failed(result: &Result<Stored, Unstored>) -> bool {
        matches!(result, Err(Unstored::Failed))
    }
}

/// Every template block, whatever its timeout: each variant expires on its
/// own; records never expire (the store's bound evicts them).
static BLOCKS: crate::cache::Cache<String, Stored> = crate::cache::Cache::new("template-block")
    .module("ultracache")
    .forever();

/// A block being rendered on this thread.
struct Frame {
    /// The key its output is stored under: the blocks inside it key on it.
    key: String,
    /// What the blocks inside it vary on.
    found: Vec<Var>,
    opaque: bool,
}

thread_local! {
    static OPEN: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
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

fn var_parts(key: &mut String, state: &State<'_, '_>, vars: &[Var]) {
    for var in vars {
        key.push_str(&var.name);
        key.push(if var.declared { '=' } else { '~' });
        key_part(key, &var.default);
        key_part(key, &var.value(state));
    }
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

fn merge(into: &mut Vec<Var>, vars: &[Var]) {
    for var in vars {
        if !into.contains(var) {
            into.push(var.clone());
        }
    }
}

/// Tells the enclosing block (if any) what this one varies on.
fn report(vars: &[Var], opaque: bool) {
    OPEN.with(|open| {
        if let Some(parent) = open.borrow_mut().last_mut() {
            merge(&mut parent.found, vars);
            parent.opaque |= opaque;
        }
    });
}

/// Renders the body, passing the variables it declares.
fn render(state: &mut State<'_, '_>, caller: &Value, own: &[Var]) -> Result<String, Error> {
    let declared: Vec<(String, Value)> = own
        .iter()
        .filter(|v| v.declared)
        .map(|v| (v.name.clone(), v.value(state)))
        .collect();
    let args = if declared.is_empty() {
        Vec::new()
    } else {
        vec![Value::from(Kwargs::from_iter(declared))]
    };
    Ok(caller.call(state, &args)?.to_string())
}

/// Renders the body inside a frame of its own: its output, what it read,
/// and what the blocks inside it vary on.
fn render_framed(
    state: &mut State<'_, '_>,
    caller: &Value,
    own: &[Var],
    key: String,
) -> (
    Result<String, Error>,
    crate::recorder::Reads,
    Vec<Var>,
    bool,
) {
    OPEN.with(|open| {
        open.borrow_mut().push(Frame {
            key,
            found: Vec::new(),
            opaque: false,
        })
    });
    let (html, reads) = crate::recorder::capture_reads(|| render(state, caller, own));
    let frame = OPEN.with(|open| open.borrow_mut().pop());
    let (found, opaque) = frame.map_or((Vec::new(), false), |f| (f.found, f.opaque));
    (html, reads, found, opaque)
}

/// Why a block's computation was not stored under the key it computed for.
enum Unstored {
    /// Another render learned more meanwhile: look again.
    Retry,
    /// The render found names the key lacked.
    Learned {
        html: Arc<str>,
        reads: crate::recorder::Reads,
        names: Vec<Var>,
        opaque: bool,
    },
    /// The render failed (the error is kept by the caller).
    Failed,
}

fn learned(base: &str) -> Option<Arc<Learned>> {
    match BLOCKS.get(&base.to_owned()) {
        Some(Stored::Learned(l)) => Some(l),
        _ => None,
    }
}

/// Serializes changes to records, so that what one render learned is never
/// lost to another's write.
static LEARNING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Adds `names` to the record under `base` (making one if there is none);
/// returns the record now stored, or `None` when nothing can be stored.
fn learn(base: &str, names: &[Var], opaque: bool) -> Option<Arc<Learned>> {
    let _learning = LEARNING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let current = learned(base);
    let (generation, mut all, was_opaque) = match &current {
        Some(l) => (l.generation, l.names.clone(), l.opaque),
        None => (crate::entry::next_id(), Vec::new(), false),
    };
    let before = all.len();
    merge(&mut all, names);
    let opaque = was_opaque || opaque || all.len() > MAX_LEARNED;
    if let Some(current) = current {
        if all.len() == before && opaque == was_opaque {
            return Some(current);
        }
    }
    let record = Arc::new(Learned {
        generation,
        names: all,
        opaque,
    });
    BLOCKS.insert(base.to_owned(), Stored::Learned(Arc::clone(&record)), &[]);
    learned(base).filter(|l| Arc::ptr_eq(l, &record))
}

fn block(
    state: &mut State<'_, '_>,
    args: &[Value],
    kwargs: &Kwargs,
    options: &Options,
) -> Result<Value, Error> {
    let caller: Value = kwargs.get("caller")?;
    let local: Option<bool> = kwargs.get("local")?;
    let local = local.unwrap_or(false);
    let grace: Option<Value> = kwargs.get("stale_if_error")?;
    let grace = match grace {
        None => None,
        Some(g) if g.is_none() => None,
        Some(g) => Some(std::time::Duration::from_secs(
            u64::try_from(g.clone()).map_err(|_| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("ultracache: stale_if_error must be whole seconds or none, not {g}"),
                )
            })?,
        )),
    };
    let declared: Vec<String> = caller
        .get_attr("arguments")
        .ok()
        .and_then(|a| a.try_iter().ok())
        .map(|names| {
            names
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut own: Vec<Var> = Vec::new();
    for name in kwargs.args() {
        if name != "caller" && name != "local" && name != "stale_if_error" {
            own.push(Var {
                name: name.to_owned(),
                default: kwargs.peek::<Value>(name)?,
                declared: declared.iter().any(|d| d == name),
            });
        }
    }
    for var in &own {
        let _: Value = kwargs.get(&var.name)?;
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
    // Values after the name cannot be looked up by an enclosing block before
    // it renders: it cannot vary on them.
    let positional = rest.len() > 1;

    if bypass(state, options) {
        if !local {
            report(&own, positional);
        }
        return Ok(Value::from_safe_string(render(state, &caller, &own)?));
    }

    // The record key: the template, the escaping, the enclosing block's key
    // (its variables pass down), the name and values, this block's own
    // variables.
    let mut base = String::from("block\u{1f}");
    base.push_str(state.name());
    base.push('\u{1f}');
    let _ = write!(base, "{:?}\u{1f}", state.auto_escape());
    if let Some(parent) = OPEN.with(|open| open.borrow().last().map(|f| f.key.clone())) {
        base.push_str(&parent);
    }
    base.push('\u{1d}');
    for value in rest {
        key_part(&mut base, value);
    }
    var_parts(&mut base, state, &own);

    // Bounded: each retry follows a record that learned more, and names
    // only grow up to MAX_LEARNED.
    for _ in 0..MAX_LEARNED + 4 {
        let Some(record) = learned(&base) else {
            if learn(&base, &[], false).is_none() {
                // Not storable (no store configured): render, uncached.
                let (html, reads, found, opaque) =
                    render_framed(state, &caller, &own, base.clone());
                crate::recorder::track_reads(reads);
                if !local {
                    report(&own, positional || opaque);
                    report(&found, false);
                }
                return Ok(Value::from_safe_string(html?));
            }
            continue;
        };
        if !local {
            report(&own, positional);
            report(&record.names, record.opaque);
        }
        let mut variant = base.clone();
        let _ = write!(variant, "\u{1e}{}\u{1e}", record.generation);
        var_parts(&mut variant, state, &record.names);
        if record.opaque {
            let (html, reads, found, opaque) = render_framed(state, &caller, &own, variant);
            crate::recorder::track_reads(reads);
            if !local {
                report(&found, opaque);
            }
            return Ok(Value::from_safe_string(html?));
        }
        let blocks = if grace.is_some() {
            &GRACED_BLOCKS
        } else {
            &BLOCKS
        };
        // A failed render's error, kept here: the cache may answer the
        // failure with an output kept past its timeout.
        let mut failure = None;
        let computed = blocks.compute_for_with::<_, BlockOutcome>(variant.clone(), timeout, || {
            if let Some(now) = learned(&base) {
                if !Arc::ptr_eq(&now, &record) {
                    return Err(Unstored::Retry);
                }
            }
            let (html, reads, found, opaque) = render_framed(state, &caller, &own, variant.clone());
            let html: Arc<str> = match html {
                Ok(html) => Arc::from(html),
                Err(e) => {
                    crate::recorder::track_reads(reads);
                    failure = Some(e);
                    return Err(Unstored::Failed);
                }
            };
            let mut names = record.names.clone();
            merge(&mut names, &found);
            let opaque = opaque || names.len() > MAX_LEARNED;
            if opaque || names.len() > record.names.len() {
                return Err(Unstored::Learned {
                    html,
                    reads,
                    names,
                    opaque,
                });
            }
            crate::recorder::track_reads(reads);
            Ok(output(html, timeout, grace))
        });
        match computed {
            Ok(Stored::Html(html)) => return Ok(Value::from_safe_string(html.to_string())),
            Ok(Stored::Graced { html, until }) => {
                // In place of this render's failure: only within the block's
                // own grace.
                if let Some(e) = failure {
                    if until.is_some_and(|until| std::time::Instant::now() > until) {
                        return Err(e);
                    }
                }
                return Ok(Value::from_safe_string(html.to_string()));
            }
            Ok(Stored::Learned(_)) | Err(Unstored::Retry) => continue,
            Err(Unstored::Failed) => {
                return Err(failure.unwrap_or_else(|| {
                    Error::new(ErrorKind::InvalidOperation, "ultracache: the block failed")
                }))
            }
            Err(Unstored::Learned {
                html,
                reads,
                names,
                opaque,
            }) => {
                if !local {
                    report(&names, opaque);
                }
                if let Some(record) = learn(&base, &names, opaque).filter(|r| !r.opaque) {
                    let mut variant = base.clone();
                    let _ = write!(variant, "\u{1e}{}\u{1e}", record.generation);
                    var_parts(&mut variant, state, &record.names);
                    blocks.insert_recorded_for(
                        variant,
                        output(Arc::clone(&html), timeout, grace),
                        &crate::recorder::Recorded(reads.clone()),
                        timeout,
                    );
                }
                crate::recorder::track_reads(reads);
                return Ok(Value::from_safe_string(html.to_string()));
            }
        }
    }
    // Records kept changing under us: render without the cache.
    Ok(Value::from_safe_string(render(state, &caller, &own)?))
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
