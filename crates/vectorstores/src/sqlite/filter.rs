//! The portable [`Filter`] as an SQL condition over the `metadata` JSON column, with SQLite's JSON functions.
//!
//! The translation follows [`Filter::matches`] exactly: a field is first looked up as one top-level key (even if
//! it contains dots), then as a dotted path into nested objects; `true` never equals `1`; `Ne` needs the field to
//! be present; range operators need a number. A filter the translation cannot express exactly (a field name with
//! a double quote, which SQLite's JSON paths cannot spell, or equality with an object, whose keys may be stored in
//! another order) yields `None`, and the store evaluates [`Filter::matches`] on each row instead, so results
//! never depend on which path ran.

use catena_core::Filter;
use rusqlite::types::Value as SqlValue;
use serde_json::Value;

/// An SQL condition and its parameters, in order (`?` placeholders).
#[derive(Debug, Default)]
pub(crate) struct SqlCondition {
    pub(crate) sql: String,
    pub(crate) params: Vec<SqlValue>,
}

/// Translates `filter` into a condition over the JSON column `column`, or `None` when no exact translation exists.
pub(crate) fn to_sql(filter: &Filter, column: &str) -> Option<SqlCondition> {
    let mut out = SqlCondition::default();
    write(filter, column, &mut out)?;
    Some(out)
}

/// A JSON path string for SQLite (`$."a"."b"`), or `None` when a part contains a double quote.
fn json_path<'a>(parts: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut path = String::from("$");
    for part in parts {
        if part.contains('"') {
            return None;
        }
        path.push_str(".\"");
        path.push_str(part);
        path.push('"');
    }
    Some(path)
}

/// Pushes the SQL expression of the path that `Filter::matches` would read for `field`: the whole field as one
/// key when that key exists, else the dotted path.
fn push_path(field: &str, column: &str, out: &mut SqlCondition) -> Option<()> {
    let whole = json_path([field])?;
    if !field.contains('.') {
        out.sql.push('?');
        out.params.push(SqlValue::Text(whole));
        return Some(());
    }
    let nested = json_path(field.split('.'))?;
    out.sql.push_str(&format!("(CASE WHEN json_type({column}, ?) IS NOT NULL THEN ? ELSE ? END)"));
    out.params.extend([SqlValue::Text(whole.clone()), SqlValue::Text(whole), SqlValue::Text(nested)]);
    Some(())
}

/// `json_type(column, <path of field>)`.
fn push_type(field: &str, column: &str, out: &mut SqlCondition) -> Option<()> {
    out.sql.push_str(&format!("json_type({column}, "));
    push_path(field, column, out)?;
    out.sql.push(')');
    Some(())
}

/// `json_extract(column, <path of field>)`.
fn push_extract(field: &str, column: &str, out: &mut SqlCondition) -> Option<()> {
    out.sql.push_str(&format!("json_extract({column}, "));
    push_path(field, column, out)?;
    out.sql.push(')');
    Some(())
}

/// The field is present and equals `value` (numbers by value, `true` distinct from `1`).
fn push_eq(field: &str, value: &Value, column: &str, out: &mut SqlCondition) -> Option<()> {
    // A missing field makes the comparison NULL; COALESCE turns that into false so that NOT stays exact.
    out.sql.push_str("COALESCE((");
    push_type(field, column, out)?;
    match value {
        Value::Null => out.sql.push_str(" = 'null'"),
        Value::Bool(true) => out.sql.push_str(" = 'true'"),
        Value::Bool(false) => out.sql.push_str(" = 'false'"),
        Value::Number(n) => {
            out.sql.push_str(" IN ('integer', 'real') AND ");
            push_extract(field, column, out)?;
            out.sql.push_str(" = ?");
            out.params.push(match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => SqlValue::Integer(i),
                (None, Some(f)) => SqlValue::Real(f),
                (None, None) => return None,
            });
        }
        Value::String(s) => {
            out.sql.push_str(" = 'text' AND ");
            push_extract(field, column, out)?;
            out.sql.push_str(" = ?");
            out.params.push(SqlValue::Text(s.clone()));
        }
        Value::Object(_) => return None,
        Value::Array(items) => {
            // json_extract returns a nested value's text as stored (serde_json's compact form), so arrays of
            // scalars are equal exactly when their text is. Objects are not: key order may differ between equal
            // objects, so a filter comparing with one is evaluated in Rust.
            if items.iter().any(|v| v.is_object() || v.is_array()) {
                return None;
            }
            out.sql.push_str(" = 'array' AND ");
            push_extract(field, column, out)?;
            out.sql.push_str(" = ?");
            out.params.push(SqlValue::Text(serde_json::to_string(value).ok()?));
        }
    }
    out.sql.push_str("), 0)");
    Some(())
}

fn write(filter: &Filter, column: &str, out: &mut SqlCondition) -> Option<()> {
    match filter {
        Filter::Eq(field, value) => push_eq(field, value, column, out)?,
        Filter::Ne(field, value) => {
            out.sql.push_str("(COALESCE(");
            push_type(field, column, out)?;
            out.sql.push_str(" IS NOT NULL, 0) AND NOT ");
            push_eq(field, value, column, out)?;
            out.sql.push(')');
        }
        Filter::In(field, values) => {
            if values.is_empty() {
                out.sql.push('0');
                return Some(());
            }
            out.sql.push('(');
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    out.sql.push_str(" OR ");
                }
                push_eq(field, value, column, out)?;
            }
            out.sql.push(')');
        }
        Filter::Gt(field, v) | Filter::Gte(field, v) | Filter::Lt(field, v) | Filter::Lte(field, v) => {
            let op = match filter {
                Filter::Gt(..) => ">",
                Filter::Gte(..) => ">=",
                Filter::Lt(..) => "<",
                _ => "<=",
            };
            if v.is_nan() {
                // No number compares with NaN.
                out.sql.push('0');
                return Some(());
            }
            out.sql.push_str("COALESCE((");
            push_type(field, column, out)?;
            out.sql.push_str(" IN ('integer', 'real') AND ");
            push_extract(field, column, out)?;
            out.sql.push_str(&format!(" {op} ?), 0)"));
            out.params.push(SqlValue::Real(*v));
        }
        Filter::Exists(field) => {
            out.sql.push_str("COALESCE((");
            push_type(field, column, out)?;
            out.sql.push_str(" != 'null'), 0)");
        }
        Filter::And(filters) | Filter::Or(filters) => {
            let (joiner, empty) = if matches!(filter, Filter::And(_)) { (" AND ", "1") } else { (" OR ", "0") };
            if filters.is_empty() {
                out.sql.push_str(empty);
                return Some(());
            }
            out.sql.push('(');
            for (i, f) in filters.iter().enumerate() {
                if i > 0 {
                    out.sql.push_str(joiner);
                }
                write(f, column, out)?;
            }
            out.sql.push(')');
        }
        Filter::Not(inner) => {
            // Every leaf is COALESCEd to true or false (never NULL), so NOT is the exact complement.
            out.sql.push_str("(NOT ");
            write(inner, column, out)?;
            out.sql.push(')');
        }
    }
    Some(())
}
