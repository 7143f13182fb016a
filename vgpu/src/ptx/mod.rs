//! PTX text → a syntax tree.
//!
//! The grammar covered is what rustc's NVPTX backend (LLVM) writes, plus the inline PTX of
//! qwenmk's device layer: module directives, `.extern .shared` and `.global` variables,
//! `.entry` and `.func` definitions with `.param` lists, `.reg` declarations, labels, guarded
//! instructions and their operands. Anything else is an error that names the PTX line, so a
//! new construct in the compiler's output is noticed rather than misread. Instruction
//! *meaning* is checked later, in [`crate::decode`].

mod text;

use std::fmt;

pub use text::Source;

/// A PTX module.
#[derive(Debug, Clone, PartialEq)]
pub struct Module {
    /// `.version major.minor`.
    pub version: (u32, u32),
    /// `.target sm_90` and friends (the first target word).
    pub target: String,
    pub address_size: u32,
    /// Module-scope variables (`.shared`, `.global`, `.const`).
    pub variables: Vec<Variable>,
    pub functions: Vec<Function>,
}

/// A state space a variable or an access lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateSpace {
    Global,
    Shared,
    Const,
    Local,
    Param,
}

impl StateSpace {
    pub fn name(self) -> &'static str {
        match self {
            StateSpace::Global => "global",
            StateSpace::Shared => "shared",
            StateSpace::Const => "const",
            StateSpace::Local => "local",
            StateSpace::Param => "param",
        }
    }
}

/// A variable declaration (`.extern .shared .align 16 .b8 name[];`).
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    pub name: String,
    pub space: StateSpace,
    pub align: u32,
    /// Bytes per element.
    pub element_bytes: u32,
    /// Elements; `None` for an unsized (`[]`) extern array such as dynamic shared memory.
    pub count: Option<u64>,
    pub is_extern: bool,
    /// Initial bytes (`= {...}`), little-endian, when given.
    pub init: Option<Vec<u8>>,
    pub line: u32,
}

impl Variable {
    /// Size in bytes (0 for an unsized extern array).
    pub fn bytes(&self) -> u64 {
        self.count.unwrap_or(0) * self.element_bytes as u64
    }
}

/// A `.param` of an entry or function.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub align: u32,
    pub bytes: u32,
}

/// A `.reg` declaration: `prefix<count>` declares `prefix0 .. prefix{count-1}`; without a count
/// it declares the single register `prefix`.
#[derive(Debug, Clone, PartialEq)]
pub struct RegDecl {
    pub ty: String,
    pub prefix: String,
    pub count: Option<u32>,
    pub line: u32,
}

/// A `.entry` (kernel) or `.func` (device function).
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub name: String,
    pub is_entry: bool,
    pub params: Vec<Param>,
    pub returns: Vec<Param>,
    pub regs: Vec<RegDecl>,
    /// `.local` and `.shared` variables declared inside the body.
    pub variables: Vec<Variable>,
    pub body: Vec<Statement>,
    pub line: u32,
}

impl Function {
    /// Bytes of the parameter space, laid out in order with each parameter's alignment.
    pub fn param_bytes(&self) -> u32 {
        let mut end = 0u32;
        for p in &self.params {
            end = end.next_multiple_of(p.align.max(1)) + p.bytes;
        }
        end
    }

    /// Offset of each parameter in the parameter space.
    pub fn param_offsets(&self) -> Vec<u32> {
        let mut end = 0u32;
        self.params
            .iter()
            .map(|p| {
                let at = end.next_multiple_of(p.align.max(1));
                end = at + p.bytes;
                at
            })
            .collect()
    }
}

/// One statement of a body.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    Label(String),
    Instruction(Instruction),
}

/// A guarded instruction: `@!%p1 opcode.modifiers operands;`.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    /// The guard predicate and whether it is negated.
    pub guard: Option<(String, bool)>,
    /// The whole opcode with its modifiers, e.g. `ld.global.nc.L1::no_allocate.v4.u32`.
    pub opcode: String,
    pub operands: Vec<Operand>,
    pub line: u32,
}

/// An operand as written.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A register or special register, e.g. `%r12`, `%tid.x`.
    Reg(String),
    /// Two predicate destinations, `%p1|%p2` (setp).
    RegPair(String, String),
    /// An integer literal (value as written, sign included).
    Int(i128),
    /// `0fXXXXXXXX`: an f32 by its bits.
    F32(u32),
    /// `0dXXXXXXXXXXXXXXXX`: an f64 by its bits.
    F64(u64),
    /// A label, variable or function name, with an offset (`name+8`).
    Symbol(String, i64),
    /// `[base+offset]`.
    Address(AddressBase, i64),
    /// `{a, b, ...}`.
    Vector(Vec<Operand>),
    /// `_`: a discarded result.
    Sink,
    /// `!%p`: a negated predicate source.
    Not(Box<Operand>),
}

/// What an address operand is relative to.
#[derive(Debug, Clone, PartialEq)]
pub enum AddressBase {
    Reg(String),
    Symbol(String),
    /// An absolute address (`[0x1000]`): only the offset.
    Absolute,
}

/// A syntax error with the PTX line it is on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: u32,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PTX line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

type Result<T> = std::result::Result<T, ParseError>;

fn err<T>(line: u32, message: impl Into<String>) -> Result<T> {
    Err(ParseError {
        line,
        message: message.into(),
    })
}

/// Parses a whole module.
pub fn parse(ptx: &str) -> Result<Module> {
    let src = Source::new(ptx);
    let mut module = Module {
        version: (0, 0),
        target: String::new(),
        address_size: 64,
        variables: Vec::new(),
        functions: Vec::new(),
    };
    let mut cursor = 0usize;
    let text = src.clean();
    while let Some(start) = text::skip_space(text, cursor) {
        let line = src.line_of(start);
        // `.version`, `.target` and `.address_size` end at the end of their line, not at `;`.
        let rest = &text[start..];
        if [".version", ".target", ".address_size"]
            .iter()
            .any(|d| rest.starts_with(d))
        {
            let end = rest.find('\n').map_or(text.len(), |e| start + e);
            parse_module_directive(
                &mut module,
                text[start..end].trim().trim_end_matches(';'),
                line,
            )?;
            cursor = end;
            continue;
        }
        let (end, terminator) = text::header_end(text, start).ok_or_else(|| ParseError {
            line,
            message: "a directive that never ends (no `;` or `{`)".into(),
        })?;
        let header = &text[start..end];
        match terminator {
            b';' => {
                parse_module_directive(&mut module, header.trim(), line)?;
                cursor = end + 1;
            }
            _ => {
                let close = text::matching_brace(text, end).ok_or_else(|| ParseError {
                    line,
                    message: "a function body that never closes (no matching `}`)".into(),
                })?;
                let mut function = parse_function_header(header.trim(), line)?;
                parse_body(&src, end + 1, close, &mut function)?;
                module.functions.push(function);
                cursor = close + 1;
            }
        }
    }
    if module.target.is_empty() {
        return err(1, "the module has no `.target` directive");
    }
    Ok(module)
}

/// Words of a directive, with brackets and `=` kept attached as written.
fn words(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

fn parse_module_directive(module: &mut Module, d: &str, line: u32) -> Result<()> {
    let w = words(d);
    match w.first().copied() {
        Some(".version") => {
            let v = w.get(1).copied().unwrap_or("");
            let (major, minor) = v.split_once('.').unwrap_or((v, "0"));
            match (major.parse(), minor.parse()) {
                (Ok(a), Ok(b)) => module.version = (a, b),
                _ => return err(line, format!("bad .version `{v}`")),
            }
        }
        Some(".target") => {
            let t = w.get(1).copied().unwrap_or("");
            module.target = t.trim_end_matches(',').to_string();
        }
        Some(".address_size") => {
            module.address_size =
                w.get(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| ParseError {
                        line,
                        message: "bad .address_size".into(),
                    })?;
            if module.address_size != 64 {
                return err(line, "only 64-bit addressing is supported");
            }
        }
        Some(".extern" | ".visible" | ".global" | ".shared" | ".const" | ".weak")
            if !d.contains(".func") && !d.contains(".entry") =>
        {
            module.variables.push(parse_variable(d, line)?);
        }
        Some(".extern" | ".visible" | ".weak") => {
            // A function prototype (`.extern .func name(...)`): calls are not supported, so a
            // prototype is harmless until something calls it.
        }
        Some(other) => return err(line, format!("unknown module directive `{other}`")),
        None => {}
    }
    Ok(())
}

/// Bytes of a scalar PTX type name such as `.b32` or `.f64`.
pub fn type_bytes(ty: &str) -> Option<u32> {
    let t = ty.strip_prefix('.').unwrap_or(ty);
    Some(match t {
        "pred" => 1,
        "b8" | "u8" | "s8" => 1,
        "b16" | "u16" | "s16" | "f16" | "bf16" => 2,
        "b32" | "u32" | "s32" | "f32" | "f16x2" | "bf16x2" => 4,
        "b64" | "u64" | "s64" | "f64" => 8,
        "b128" => 16,
        _ => return None,
    })
}

/// `.extern .shared .align 16 .b8 name[];`, `.global .align 4 .u32 counts[8] = {0, 1, ...};`.
fn parse_variable(d: &str, line: u32) -> Result<Variable> {
    let (decl, init) = match d.split_once('=') {
        Some((a, b)) => (a.trim(), Some(b.trim())),
        None => (d, None),
    };
    let mut space = None;
    let mut align = 0;
    let mut ty = None;
    let mut is_extern = false;
    let mut name = None;
    let mut it = words(decl).into_iter().peekable();
    while let Some(w) = it.next() {
        match w {
            ".extern" => is_extern = true,
            ".visible" | ".weak" | ".common" => {}
            ".global" => space = Some(StateSpace::Global),
            ".shared" => space = Some(StateSpace::Shared),
            ".const" => space = Some(StateSpace::Const),
            ".local" => space = Some(StateSpace::Local),
            ".align" => {
                align = it
                    .next()
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| ParseError {
                        line,
                        message: "`.align` without a number".into(),
                    })?
            }
            w if w.starts_with('.') && type_bytes(w).is_some() => ty = Some(w),
            w if !w.starts_with('.') => name = Some(w),
            w => return err(line, format!("unknown variable attribute `{w}`")),
        }
    }
    let space = space.ok_or_else(|| ParseError {
        line,
        message: "a variable without a state space".into(),
    })?;
    let ty = ty.ok_or_else(|| ParseError {
        line,
        message: "a variable without a type".into(),
    })?;
    let name = name.ok_or_else(|| ParseError {
        line,
        message: "a variable without a name".into(),
    })?;
    let element_bytes = type_bytes(ty).unwrap_or(1);
    let (base, count) = match name.split_once('[') {
        Some((base, rest)) => {
            let n = rest.trim_end_matches(']').trim();
            let count = if n.is_empty() {
                None
            } else {
                Some(parse_int(n).ok_or_else(|| ParseError {
                    line,
                    message: format!("bad array size `{n}`"),
                })? as u64)
            };
            (base, count)
        }
        None => (name, Some(1)),
    };
    let init = match init {
        Some(text) => {
            let body = text.trim().trim_start_matches('{').trim_end_matches('}');
            let mut bytes = Vec::new();
            for item in body.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let v = parse_int(item).ok_or_else(|| ParseError {
                    line,
                    message: format!("unsupported initializer `{item}` (integers only)"),
                })?;
                bytes.extend_from_slice(&(v as u64).to_le_bytes()[..element_bytes as usize]);
            }
            Some(bytes)
        }
        None => None,
    };
    Ok(Variable {
        name: base.to_string(),
        space,
        align: align.max(element_bytes),
        element_bytes,
        count,
        is_extern,
        init,
        line,
    })
}

/// An integer literal: decimal, `0x` hex, octal `0…`, optional sign and `U` suffix.
pub fn parse_int(s: &str) -> Option<i128> {
    let s = s.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let digits = digits.trim_end_matches(['U', 'u']);
    let v = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i128::from_str_radix(hex, 16).ok()?
    } else if digits.len() > 1
        && digits.starts_with('0')
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        i128::from_str_radix(&digits[1..], 8).ok()?
    } else {
        digits.parse::<i128>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// `.visible .entry name(.param .align 8 .b8 name_param_0[176]) .maxntid 256, 1, 1`
/// or `.visible .func (.param .b32 func_retval0) name(.param .b64 p0)`.
fn parse_function_header(h: &str, line: u32) -> Result<Function> {
    let is_entry = h.contains(".entry");
    let keyword = if is_entry { ".entry" } else { ".func" };
    let Some(at) = h.find(keyword) else {
        return err(line, "a `{` block that is not a function body");
    };
    let mut rest = h[at + keyword.len()..].trim_start();
    let mut returns = Vec::new();
    if rest.starts_with('(') {
        let close = rest.find(')').ok_or_else(|| ParseError {
            line,
            message: "unclosed return parameter list".into(),
        })?;
        returns = parse_params(&rest[1..close], line)?;
        rest = rest[close + 1..].trim_start();
    }
    let name_end = rest
        .find(|c: char| c == '(' || c.is_whitespace())
        .unwrap_or(rest.len());
    let name = rest[..name_end].to_string();
    if name.is_empty() {
        return err(line, "a function without a name");
    }
    rest = rest[name_end..].trim_start();
    let mut params = Vec::new();
    if rest.starts_with('(') {
        let close = rest.find(')').ok_or_else(|| ParseError {
            line,
            message: "unclosed parameter list".into(),
        })?;
        params = parse_params(&rest[1..close], line)?;
        rest = rest[close + 1..].trim_start();
    }
    // Performance directives (.maxntid, .reqntid, .minnctapersm, .maxnreg, .noreturn, ...)
    // do not change what the code computes.
    for w in words(rest) {
        let known = [
            ".maxntid",
            ".reqntid",
            ".minnctapersm",
            ".maxnctapersm",
            ".maxnreg",
            ".noreturn",
            ".pragma",
            ".explicitcluster",
            ".reqnctapercluster",
            ".maxclusterrank",
        ];
        if w.starts_with('.') && !known.contains(&w) {
            return err(line, format!("unknown function directive `{w}`"));
        }
    }
    Ok(Function {
        name,
        is_entry,
        params,
        returns,
        regs: Vec::new(),
        variables: Vec::new(),
        body: Vec::new(),
        line,
    })
}

/// `.param .align 8 .b8 p[176], .param .b64 q`.
fn parse_params(list: &str, line: u32) -> Result<Vec<Param>> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let mut align = 0;
        let mut ty = None;
        let mut name = None;
        let mut it = words(item).into_iter();
        while let Some(w) = it.next() {
            match w {
                ".param" | ".reg" => {}
                ".ptr" | ".global" | ".shared" | ".const" | ".local" => {}
                ".align" => {
                    align = it
                        .next()
                        .and_then(|a| a.parse().ok())
                        .ok_or_else(|| ParseError {
                            line,
                            message: "`.align` without a number in a parameter".into(),
                        })?
                }
                w if type_bytes(w).is_some() => ty = Some(w),
                w if !w.starts_with('.') => name = Some(w),
                w => return err(line, format!("unknown parameter attribute `{w}`")),
            }
        }
        let (Some(ty), Some(name)) = (ty, name) else {
            return err(
                line,
                format!("a parameter without a type or name: `{item}`"),
            );
        };
        let element = type_bytes(ty).unwrap_or(1);
        let (base, count) = match name.split_once('[') {
            Some((b, n)) => {
                let n = n.trim_end_matches(']');
                (
                    b,
                    parse_int(n).ok_or_else(|| ParseError {
                        line,
                        message: format!("bad parameter array size `{n}`"),
                    })? as u32,
                )
            }
            None => (name, 1),
        };
        out.push(Param {
            name: base.to_string(),
            align: if align == 0 { element } else { align },
            bytes: element * count,
        });
    }
    Ok(out)
}

/// The statements between `{` at `open` (exclusive) and the matching `}` at `close`.
fn parse_body(src: &Source, start: usize, close: usize, f: &mut Function) -> Result<()> {
    let text = src.clean();
    let mut pos = start;
    while let Some(s) = text::skip_space(text, pos).filter(|&s| s < close) {
        let line = src.line_of(s);
        let b = text.as_bytes()[s];
        if b == b'{' || b == b'}' {
            // A nested scope (inline asm may open one for its own registers).
            pos = s + 1;
            continue;
        }
        if let Some(label_len) = text::label_at(&text[s..close]) {
            f.body
                .push(Statement::Label(text[s..s + label_len].to_string()));
            pos = s + label_len + 1;
            continue;
        }
        let end = text::statement_end(text, s, close).ok_or_else(|| ParseError {
            line,
            message: "a statement without a closing `;`".into(),
        })?;
        let stmt = text[s..end].trim();
        pos = end + 1;
        if stmt.starts_with('.') {
            parse_body_directive(stmt, line, f)?;
        } else {
            f.body
                .push(Statement::Instruction(parse_instruction(stmt, line)?));
        }
    }
    Ok(())
}

fn parse_body_directive(d: &str, line: u32, f: &mut Function) -> Result<()> {
    let w = words(d);
    match w[0] {
        ".reg" => {
            let ty = w.get(1).copied().unwrap_or("");
            if type_bytes(ty).is_none() {
                return err(line, format!("unknown register type `{ty}`"));
            }
            let names = d[d.find(ty).unwrap_or(0) + ty.len()..].trim();
            for name in names.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let decl = match name.split_once('<') {
                    Some((prefix, n)) => RegDecl {
                        ty: ty.to_string(),
                        prefix: prefix.to_string(),
                        count: Some(n.trim_end_matches('>').parse().map_err(|_| ParseError {
                            line,
                            message: format!("bad register count in `{name}`"),
                        })?),
                        line,
                    },
                    None => RegDecl {
                        ty: ty.to_string(),
                        prefix: name.to_string(),
                        count: None,
                        line,
                    },
                };
                f.regs.push(decl);
            }
        }
        ".local" | ".shared" => f.variables.push(parse_variable(d, line)?),
        ".pragma" => {}
        other => {
            return err(
                line,
                format!("unknown directive `{other}` in a function body"),
            );
        }
    }
    Ok(())
}

/// `@%p4 bra $L__BB3_4`, `ld.global.nc.v4.u32 {%r1, %r2, %r3, %r4}, [%rd1+16]`.
pub fn parse_instruction(stmt: &str, line: u32) -> Result<Instruction> {
    let mut s = stmt.trim();
    let mut guard = None;
    if let Some(rest) = s.strip_prefix('@') {
        let (negated, rest) = match rest.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let end = rest.find(char::is_whitespace).ok_or_else(|| ParseError {
            line,
            message: "a guard without an instruction".into(),
        })?;
        guard = Some((rest[..end].to_string(), negated));
        s = rest[end..].trim_start();
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    let opcode = s[..end].to_string();
    let operands = text::split_top_level(&s[end..])
        .into_iter()
        .map(|o| parse_operand(o, line))
        .collect::<Result<Vec<_>>>()?;
    Ok(Instruction {
        guard,
        opcode,
        operands,
        line,
    })
}

fn parse_operand(o: &str, line: u32) -> Result<Operand> {
    let o = o.trim();
    if o.is_empty() {
        return err(line, "an empty operand");
    }
    if o == "_" {
        return Ok(Operand::Sink);
    }
    if let Some(inner) = o.strip_prefix('{') {
        let inner = inner.strip_suffix('}').ok_or_else(|| ParseError {
            line,
            message: format!("unclosed vector operand `{o}`"),
        })?;
        return Ok(Operand::Vector(
            text::split_top_level(inner)
                .into_iter()
                .map(|e| parse_operand(e, line))
                .collect::<Result<_>>()?,
        ));
    }
    if let Some(inner) = o.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(|| ParseError {
            line,
            message: format!("unclosed address operand `{o}`"),
        })?;
        return parse_address(inner.trim(), line);
    }
    if let Some(rest) = o.strip_prefix('!') {
        return Ok(Operand::Not(Box::new(parse_operand(rest, line)?)));
    }
    if o.starts_with('%') {
        if let Some((a, b)) = o.split_once('|') {
            return Ok(Operand::RegPair(a.trim().into(), b.trim().into()));
        }
        return Ok(Operand::Reg(o.to_string()));
    }
    let first = o.as_bytes()[0];
    if first.is_ascii_digit() || first == b'-' || first == b'+' {
        let lower = o.to_ascii_lowercase();
        if let Some(hex) = lower.strip_prefix("0f") {
            return u32::from_str_radix(hex, 16)
                .map(Operand::F32)
                .map_err(|_| ParseError {
                    line,
                    message: format!("bad f32 literal `{o}`"),
                });
        }
        if let Some(hex) = lower.strip_prefix("0d") {
            return u64::from_str_radix(hex, 16)
                .map(Operand::F64)
                .map_err(|_| ParseError {
                    line,
                    message: format!("bad f64 literal `{o}`"),
                });
        }
        return parse_int(o.trim_start_matches('+'))
            .map(Operand::Int)
            .ok_or_else(|| ParseError {
                line,
                message: format!("bad number `{o}`"),
            });
    }
    let (name, offset) = split_offset(o, line)?;
    Ok(Operand::Symbol(name.to_string(), offset))
}

/// `name+8`, `name+-8`, `name-8`, `name` → (name, offset).
fn split_offset(s: &str, line: u32) -> Result<(&str, i64)> {
    // The first `+` or `-` after the base starts the offset (names have neither).
    let Some(at) = s[1..].find(['+', '-']).map(|i| i + 1) else {
        return Ok((s.trim(), 0));
    };
    let base = s[..at].trim();
    let mut expr = s[at..].trim();
    let mut negative = false;
    while let Some(c) = expr.chars().next().filter(|c| *c == '+' || *c == '-') {
        if c == '-' {
            negative = !negative;
        }
        expr = expr[1..].trim_start();
    }
    let v = parse_int(expr).ok_or_else(|| ParseError {
        line,
        message: format!("bad offset in `{s}`"),
    })? as i64;
    Ok((base, if negative { -v } else { v }))
}

fn parse_address(inner: &str, line: u32) -> Result<Operand> {
    if inner.is_empty() {
        return err(line, "an empty address `[]`");
    }
    let first = inner.as_bytes()[0];
    if first.is_ascii_digit() || first == b'-' {
        let v = parse_int(inner).ok_or_else(|| ParseError {
            line,
            message: format!("bad absolute address `[{inner}]`"),
        })?;
        return Ok(Operand::Address(AddressBase::Absolute, v as i64));
    }
    let (base, offset) = split_offset(inner, line)?;
    let base = if base.starts_with('%') {
        AddressBase::Reg(base.to_string())
    } else {
        AddressBase::Symbol(base.to_string())
    };
    Ok(Operand::Address(base, offset))
}

#[cfg(test)]
mod tests;
