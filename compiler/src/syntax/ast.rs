//! The abstract syntax tree of a `.nn` file, as written: nothing is evaluated or checked yet.

use crate::diagnostics::Span;

/// A name with the place it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A whole file.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct File {
    pub items: Vec<Item>,
}

/// A top-level definition.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Const(ConstDef),
    Block(BlockDef),
    Network(NetworkDef),
}

/// `const name = value`, at the top level or in a body.
#[derive(Clone, Debug, PartialEq)]
pub struct ConstDef {
    pub name: Ident,
    pub value: Expr,
}

/// `block name(params) { body }`.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockDef {
    pub name: Ident,
    pub params: Vec<BlockParam>,
    pub body: Vec<Stmt>,
    /// The closing brace, where a missing `return` is reported.
    pub end: Span,
}

/// A block parameter with an optional default.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockParam {
    pub name: Ident,
    pub default: Option<Expr>,
}

/// `network name(inputs) -> outputs where dims { body }`.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkDef {
    pub name: Ident,
    pub inputs: Vec<InputDecl>,
    pub outputs: Vec<OutputDecl>,
    pub dims: Vec<(Ident, Expr)>,
    pub body: Vec<Stmt>,
}

/// A network input: `x: f32[batch, 784]`.
#[derive(Clone, Debug, PartialEq)]
pub struct InputDecl {
    pub name: Ident,
    pub ty: TypeExpr,
}

/// A network output with its optional declared type.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputDecl {
    pub name: Ident,
    pub ty: Option<TypeExpr>,
}

/// A tensor type as written: `f32[batch, seq, hidden]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeExpr {
    pub dtype: crate::ir::DType,
    pub dims: Vec<Expr>,
    pub span: Span,
}

/// A statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `const name = value`.
    Const(ConstDef),
    /// `target = value as layer_name`.
    Assign {
        target: Ident,
        value: Expr,
        layer_name: Option<LayerName>,
    },
    /// `if cond { then } else { otherwise }`.
    If {
        cond: Expr,
        then: Vec<Stmt>,
        otherwise: Vec<Stmt>,
    },
    /// `for var in start..end { body }`.
    For {
        var: Ident,
        start: Expr,
        end: Expr,
        body: Vec<Stmt>,
    },
    /// `repeat count { body }`.
    Repeat { count: Expr, body: Vec<Stmt> },
    /// `return value as layer_name`.
    Return {
        value: Expr,
        layer_name: Option<LayerName>,
        span: Span,
    },
}

/// The layer name given with `as`.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerName {
    /// `as "encoder.layer.0"`.
    Literal { name: String, span: Span },
    /// `as layers[i].attn`.
    Path(Vec<NameSegment>),
}

/// One segment of a layer path and its `[index]` suffixes.
#[derive(Clone, Debug, PartialEq)]
pub struct NameSegment {
    /// A name or a number, as written.
    pub head: Ident,
    pub indices: Vec<Expr>,
}

/// An expression with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

/// The kinds of expression.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    List(Vec<Expr>),
    Var(String),
    Call {
        callee: Ident,
        args: Vec<Arg>,
    },
    Binary {
        op: BinaryOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Unary {
        op: UnaryOp,
        operand: Box<Expr>,
    },
}

/// A call argument, positional or keyword.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinaryOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::And => "&&",
            BinaryOp::Or => "||",
        }
    }
}

/// Unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Neg,
    Not,
}
