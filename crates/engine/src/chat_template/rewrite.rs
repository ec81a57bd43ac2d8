//! The template as minijinja parses it, rewritten so that every operation that can build a
//! large value, or spend long on one, goes through a guard (`guards.rs`, `limits.rs`):
//!
//! - `a + b`, `a ~ b`, `a * b` become `~add(a, b)`, `~concat(a, b)`, `~mul(a, b)`, which check
//!   the size of the result before building it;
//! - operands of comparisons and `in`, and computed subscripts, pass through `~touch`, which
//!   charges the bytes the comparison or hash will read;
//! - list and map literals and slices pass through `~admit`, which measures them;
//! - a value assigned to a namespace attribute (`{% set ns.x = ... %}`, also as a block) or
//!   handed to `loop.changed()` passes through `~store`, which copies it as plain data, so no
//!   value can contain a namespace or loop, and none can contain itself;
//! - what the template prints passes through `~out` outside captures, which charges the
//!   output limit, or `~captured` inside them, which charges the memory limit (the formatter
//!   charges it too); template text becomes a printed constant, so it is charged like any
//!   other printed value.
//!
//! Filters, tests, methods and functions are guarded where they are registered (`guards.rs`),
//! so calling them by name (`map('indent', ...)`) is guarded too. The guards are global
//! functions and filters whose names start with `~`, which no Jinja identifier can.

use minijinja::machinery::ast::{self, CallArg, Expr, Spanned, Stmt};
use minijinja::machinery::{tokenize, Span, Token, WhitespaceConfig};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::Value;

use super::limits::{Limit, MAX_TAG_OPERATORS, MAX_TAG_TOKENS};

/// Fails when a tag holds more tokens or operators than [`MAX_TAG_TOKENS`] and
/// [`MAX_TAG_OPERATORS`]: its expression would nest deep enough that compiling or dropping
/// it overflows the stack. Lexer errors are left to the parser, which reports them.
pub(super) fn check_tags(source: &str, ws: WhitespaceConfig) -> Result<(), Limit> {
    let (mut tokens, mut operators) = (0usize, 0usize);
    for token in tokenize(source, false, SyntaxConfig, ws) {
        let Ok((token, _)) = token else {
            break;
        };
        match token {
            Token::VariableStart | Token::BlockStart => {
                tokens = 0;
                operators = 0;
                continue;
            }
            Token::TemplateData(_) | Token::VariableEnd | Token::BlockEnd => continue,
            _ => {}
        }
        tokens += 1;
        if nests(&token) {
            operators += 1;
        }
        if tokens > MAX_TAG_TOKENS || operators > MAX_TAG_OPERATORS {
            return Err(Limit::Tag);
        }
    }
    Ok(())
}

/// Tokens that can add a level to an expression tree.
fn nests(token: &Token) -> bool {
    matches!(
        token,
        Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::FloorDiv
            | Token::Pow
            | Token::Mod
            | Token::Dot
            | Token::Tilde
            | Token::Pipe
            | Token::Eq
            | Token::Ne
            | Token::Gt
            | Token::Gte
            | Token::Lt
            | Token::Lte
            | Token::BracketOpen
            | Token::ParenOpen
            | Token::BraceOpen
            | Token::Ident("and" | "or" | "not" | "in" | "is" | "if" | "else")
    )
}

/// The rewritten template.
pub(super) fn template<'a>(root: &Stmt<'a>) -> Stmt<'a> {
    Rewriter { captured: false }.stmt(root)
}

/// Rewrites statements; `captured` is true inside a set block, filter block, macro or call
/// block, whose output is captured into a value instead of printed.
#[derive(Clone, Copy)]
struct Rewriter {
    captured: bool,
}

fn sp<T>(node: T, span: Span) -> Spanned<T> {
    Spanned::new(node, span)
}

/// `name(args...)`, a call of a guard.
fn call<'a>(name: &'static str, args: Vec<Expr<'a>>, span: Span) -> Expr<'a> {
    Expr::Call(sp(
        ast::Call {
            expr: Expr::Var(sp(ast::Var { id: name }, span)),
            args: args.into_iter().map(CallArg::Pos).collect(),
        },
        span,
    ))
}

/// `inner|name`, a guard applied as a filter (where the value is the top of the stack, as
/// after a captured block).
fn filter<'a>(name: &'static str, inner: Option<Expr<'a>>, span: Span) -> Expr<'a> {
    Expr::Filter(sp(
        ast::Filter {
            name,
            expr: inner,
            args: Vec::new(),
        },
        span,
    ))
}

/// `~touch(x)`, unless `x` is a constant other than a long string (a constant is as long as the
/// source; a long string key costs its hashing at every look-up).
fn touch(x: Expr<'_>) -> Expr<'_> {
    match x {
        // A constant costs nothing to read, but a long string key costs its hashing.
        Expr::Const(ref c) if c.value.as_str().is_none_or(|s| s.len() <= 64) => x,
        x => {
            let span = x.span();
            call("~touch", vec![x], span)
        }
    }
}

impl Rewriter {
    fn stmts<'a>(self, body: &[Stmt<'a>]) -> Vec<Stmt<'a>> {
        body.iter().map(|s| self.stmt(s)).collect()
    }

    /// What a captured body is rewritten with.
    fn inside_capture(self) -> Rewriter {
        Rewriter { captured: true }
    }

    /// `x` as printed by `{{ }}`: outside captures it counts against the output limit,
    /// inside them against the memory limit.
    fn printed<'a>(self, x: Expr<'a>, span: Span) -> Expr<'a> {
        let guard = if self.captured { "~captured" } else { "~out" };
        call(guard, vec![x], span)
    }

    fn stmt<'a>(self, stmt: &Stmt<'a>) -> Stmt<'a> {
        match stmt {
            Stmt::Template(t) => Stmt::Template(sp(
                ast::Template {
                    children: self.stmts(&t.children),
                },
                t.span(),
            )),
            Stmt::EmitExpr(e) => Stmt::EmitExpr(sp(
                ast::EmitExpr {
                    expr: self.printed(expr(&e.expr), e.span()),
                },
                e.span(),
            )),
            // Template text is printed as a safe constant: never escaped, like the text.
            Stmt::EmitRaw(r) => {
                let text = Expr::Const(sp(
                    ast::Const {
                        value: Value::from_safe_string(r.raw.to_owned()),
                    },
                    r.span(),
                ));
                Stmt::EmitExpr(sp(
                    ast::EmitExpr {
                        expr: self.printed(text, r.span()),
                    },
                    r.span(),
                ))
            }
            Stmt::ForLoop(f) => Stmt::ForLoop(sp(
                ast::ForLoop {
                    target: target(&f.target),
                    iter: expr(&f.iter),
                    filter_expr: f.filter_expr.as_ref().map(expr),
                    recursive: f.recursive,
                    body: self.stmts(&f.body),
                    else_body: self.stmts(&f.else_body),
                },
                f.span(),
            )),
            Stmt::IfCond(c) => Stmt::IfCond(sp(
                ast::IfCond {
                    expr: expr(&c.expr),
                    true_body: self.stmts(&c.true_body),
                    false_body: self.stmts(&c.false_body),
                },
                c.span(),
            )),
            Stmt::WithBlock(w) => Stmt::WithBlock(sp(
                ast::WithBlock {
                    assignments: w
                        .assignments
                        .iter()
                        .map(|(t, e)| (target(t), expr(e)))
                        .collect(),
                    body: self.stmts(&w.body),
                },
                w.span(),
            )),
            Stmt::Set(s) => {
                let value = expr(&s.expr);
                let value = if assigns_attribute(&s.target) {
                    call("~store", vec![value], s.span())
                } else {
                    value
                };
                Stmt::Set(sp(
                    ast::Set {
                        target: target(&s.target),
                        expr: value,
                    },
                    s.span(),
                ))
            }
            Stmt::SetBlock(s) => {
                let chain = s.filter.as_ref().map(expr);
                let chain = if assigns_attribute(&s.target) {
                    Some(filter("~store", chain, s.span()))
                } else {
                    chain
                };
                Stmt::SetBlock(sp(
                    ast::SetBlock {
                        target: target(&s.target),
                        filter: chain,
                        body: self.inside_capture().stmts(&s.body),
                    },
                    s.span(),
                ))
            }
            Stmt::AutoEscape(a) => Stmt::AutoEscape(sp(
                ast::AutoEscape {
                    enabled: expr(&a.enabled),
                    body: self.stmts(&a.body),
                },
                a.span(),
            )),
            Stmt::FilterBlock(f) => {
                let chain = expr(&f.filter);
                let chain = if self.captured {
                    chain
                } else {
                    filter("~out", Some(chain), f.span())
                };
                Stmt::FilterBlock(sp(
                    ast::FilterBlock {
                        filter: chain,
                        body: self.inside_capture().stmts(&f.body),
                    },
                    f.span(),
                ))
            }
            Stmt::Block(b) => Stmt::Block(sp(
                ast::Block {
                    name: b.name,
                    required: b.required,
                    body: self.stmts(&b.body),
                },
                b.span(),
            )),
            Stmt::Import(i) => Stmt::Import(sp(
                ast::Import {
                    expr: expr(&i.expr),
                    name: target(&i.name),
                },
                i.span(),
            )),
            Stmt::FromImport(i) => Stmt::FromImport(sp(
                ast::FromImport {
                    expr: expr(&i.expr),
                    names: i
                        .names
                        .iter()
                        .map(|(n, alias)| (target(n), alias.as_ref().map(target)))
                        .collect(),
                },
                i.span(),
            )),
            Stmt::Extends(e) => Stmt::Extends(sp(
                ast::Extends {
                    name: expr(&e.name),
                },
                e.span(),
            )),
            Stmt::Include(i) => Stmt::Include(sp(
                ast::Include {
                    name: expr(&i.name),
                    ignore_missing: i.ignore_missing,
                },
                i.span(),
            )),
            Stmt::Macro(m) => Stmt::Macro(sp(macro_decl(m), m.span())),
            // A call block prints what the macro returns; outside captures it is wrapped in
            // `{% filter ~out %}`, which captures and prints the same text, counted.
            Stmt::CallBlock(c) => {
                let block = Stmt::CallBlock(sp(
                    ast::CallBlock {
                        call: sp(call_node(&c.call), c.call.span()),
                        macro_decl: sp(macro_decl(&c.macro_decl), c.macro_decl.span()),
                    },
                    c.span(),
                ));
                if self.captured {
                    block
                } else {
                    Stmt::FilterBlock(sp(
                        ast::FilterBlock {
                            filter: filter("~out", None, c.span()),
                            body: vec![block],
                        },
                        c.span(),
                    ))
                }
            }
            Stmt::Continue(c) => Stmt::Continue(sp(ast::Continue, c.span())),
            Stmt::Break(b) => Stmt::Break(sp(ast::Break, b.span())),
            Stmt::Do(d) => Stmt::Do(sp(
                ast::Do {
                    call: sp(call_node(&d.call), d.call.span()),
                },
                d.span(),
            )),
        }
    }
}

/// A macro: its body is captured when called.
fn macro_decl<'a>(m: &ast::Macro<'a>) -> ast::Macro<'a> {
    ast::Macro {
        name: m.name,
        args: m.args.iter().map(target).collect(),
        defaults: m.defaults.iter().map(expr).collect(),
        body: Rewriter { captured: true }.stmts(&m.body),
    }
}

/// True when assigning to `t` writes a namespace attribute (`ns.x`, also inside a tuple).
fn assigns_attribute(t: &Expr<'_>) -> bool {
    match t {
        Expr::GetAttr(_) => true,
        Expr::List(l) => l.items.iter().any(assigns_attribute),
        _ => false,
    }
}

/// An assignment target (a name, a tuple of targets, `ns.attr`), kept as it is: the codegen
/// accepts only these shapes.
fn target<'a>(t: &Expr<'a>) -> Expr<'a> {
    match t {
        Expr::Var(v) => Expr::Var(sp(ast::Var { id: v.id }, v.span())),
        Expr::List(l) => Expr::List(sp(
            ast::List {
                items: l.items.iter().map(target).collect(),
            },
            l.span(),
        )),
        Expr::GetAttr(g) => Expr::GetAttr(sp(
            ast::GetAttr {
                expr: expr(&g.expr),
                name: g.name,
            },
            g.span(),
        )),
        other => expr(other),
    }
}

/// Call arguments; a splatted list or map (`*xs`, `**kw`) passes `~touch`, as the call
/// pushes every item of it.
fn args<'a>(args: &[CallArg<'a>]) -> Vec<CallArg<'a>> {
    args.iter()
        .map(|a| match a {
            CallArg::PosSplat(e) => CallArg::PosSplat(touch(expr(e))),
            CallArg::KwargSplat(e) => CallArg::KwargSplat(touch(expr(e))),
            a => arg(a, expr),
        })
        .collect()
}

fn arg<'a>(a: &CallArg<'a>, f: impl Fn(&Expr<'a>) -> Expr<'a>) -> CallArg<'a> {
    match a {
        CallArg::Pos(e) => CallArg::Pos(f(e)),
        CallArg::Kwarg(name, e) => CallArg::Kwarg(name, f(e)),
        CallArg::PosSplat(e) => CallArg::PosSplat(f(e)),
        CallArg::KwargSplat(e) => CallArg::KwargSplat(f(e)),
    }
}

/// A call; the arguments of `x.changed(...)` (`loop.changed` keeps them) are stored copies.
fn call_node<'a>(c: &ast::Call<'a>) -> ast::Call<'a> {
    let keeps_args = matches!(&c.expr, Expr::GetAttr(g) if g.name == "changed");
    ast::Call {
        expr: expr(&c.expr),
        args: if keeps_args {
            c.args
                .iter()
                .map(|a| {
                    arg(a, |e| {
                        let span = e.span();
                        call("~store", vec![expr(e)], span)
                    })
                })
                .collect()
        } else {
            args(&c.args)
        },
    }
}

fn expr<'a>(e: &Expr<'a>) -> Expr<'a> {
    match e {
        Expr::Var(v) => Expr::Var(sp(ast::Var { id: v.id }, v.span())),
        Expr::Const(c) => Expr::Const(sp(
            ast::Const {
                value: c.value.clone(),
            },
            c.span(),
        )),
        Expr::Slice(s) => {
            let span = s.span();
            let part = |p: &Option<Expr<'a>>| match p {
                Some(e) => expr(e),
                None => Expr::Const(sp(
                    ast::Const {
                        value: Value::from(()),
                    },
                    span,
                )),
            };
            call(
                "~slice",
                vec![expr(&s.expr), part(&s.start), part(&s.stop), part(&s.step)],
                span,
            )
        }
        Expr::UnaryOp(u) => Expr::UnaryOp(sp(
            ast::UnaryOp {
                op: match u.op {
                    ast::UnaryOpKind::Not => ast::UnaryOpKind::Not,
                    ast::UnaryOpKind::Neg => ast::UnaryOpKind::Neg,
                },
                expr: expr(&u.expr),
            },
            u.span(),
        )),
        Expr::BinOp(b) => {
            let (left, right) = (expr(&b.left), expr(&b.right));
            let guard = match b.op {
                ast::BinOpKind::Add => Some("~add"),
                ast::BinOpKind::Concat => Some("~concat"),
                ast::BinOpKind::Mul => Some("~mul"),
                _ => None,
            };
            if let Some(guard) = guard {
                return call(guard, vec![left, right], b.span());
            }
            let (left, right) = match b.op {
                ast::BinOpKind::Eq
                | ast::BinOpKind::Ne
                | ast::BinOpKind::Lt
                | ast::BinOpKind::Lte
                | ast::BinOpKind::Gt
                | ast::BinOpKind::Gte
                | ast::BinOpKind::In => (touch(left), touch(right)),
                _ => (left, right),
            };
            Expr::BinOp(sp(
                ast::BinOp {
                    op: b.op,
                    left,
                    right,
                },
                b.span(),
            ))
        }
        Expr::Compare(c) => Expr::Compare(sp(
            ast::Compare {
                expr: touch(expr(&c.expr)),
                ops: c
                    .ops
                    .iter()
                    .map(|o| ast::CompareOp {
                        op: o.op,
                        expr: touch(expr(&o.expr)),
                    })
                    .collect(),
            },
            c.span(),
        )),
        Expr::IfExpr(i) => Expr::IfExpr(sp(
            ast::IfExpr {
                test_expr: expr(&i.test_expr),
                true_expr: expr(&i.true_expr),
                false_expr: i.false_expr.as_ref().map(expr),
            },
            i.span(),
        )),
        Expr::Filter(f) => Expr::Filter(sp(
            ast::Filter {
                name: f.name,
                expr: f.expr.as_ref().map(expr),
                args: args(&f.args),
            },
            f.span(),
        )),
        Expr::Test(t) => Expr::Test(sp(
            ast::Test {
                name: t.name,
                expr: expr(&t.expr),
                args: args(&t.args),
            },
            t.span(),
        )),
        Expr::GetAttr(g) => Expr::GetAttr(sp(
            ast::GetAttr {
                expr: expr(&g.expr),
                name: g.name,
            },
            g.span(),
        )),
        Expr::GetItem(g) => Expr::GetItem(sp(
            ast::GetItem {
                expr: {
                    let base = expr(&g.expr);
                    let span = base.span();
                    call("~indexed", vec![base], span)
                },
                subscript_expr: touch(expr(&g.subscript_expr)),
            },
            g.span(),
        )),
        Expr::Call(c) => Expr::Call(sp(call_node(c), c.span())),
        Expr::List(l) => {
            let list = Expr::List(sp(
                ast::List {
                    items: l.items.iter().map(expr).collect(),
                },
                l.span(),
            ));
            if l.as_const().is_some() {
                list
            } else {
                call("~admit", vec![list], l.span())
            }
        }
        Expr::Map(m) => {
            let map = Expr::Map(sp(
                ast::Map {
                    keys: m.keys.iter().map(expr).collect(),
                    values: m.values.iter().map(expr).collect(),
                },
                m.span(),
            ));
            if m.as_const().is_some() {
                map
            } else {
                call("~admit", vec![map], m.span())
            }
        }
    }
}
