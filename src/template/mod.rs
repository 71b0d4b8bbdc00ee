//! Handlebars templates configured for data: strict, no HTML escaping, typed results, helpers.
//!
//! INTERFACE (to be implemented):
//! - `Template::compile(src) -> Result<Template, TemplateError>`: syntax check; errors carry the
//!   byte offset inside `src`.
//! - `Template::variables() -> Vec<VarRef>`: every variable path the template reads from the
//!   root context (including inside `#if`/`#unless`/helper params/subexpressions), so that the
//!   validator can check them; paths relative to a block context (`this`, inside `#each`) are not
//!   reported, `@root.x` is reported as `x`.
//! - `Template::render_string(&Context)` / `render_value(&Context)` (typed when the whole
//!   template is one expression) / `render_bool(&Context)` (conditions).
//! - `render_deep(value, ctx)`: renders every string inside a JSON/YAML value.
