//! A small pickle virtual machine for the objects `torch.save` writes.
//!
//! It runs the opcodes of pickle protocols 0-5 that PyTorch checkpoints use
//! (dicts, lists, tuples, strings, bytes, ints, floats, bools, None, globals,
//! REDUCE/BUILD/NEWOBJ, persistent ids, memo) and evaluates only the few
//! callables a state dict needs: `torch._utils._rebuild_tensor_v2` and its
//! Parameter wrappers become [`Value::Tensor`], `collections.OrderedDict`
//! becomes a [`Value::Dict`], `_codecs.encode` (protocol 2's bytes) becomes
//! [`Value::Bytes`]. Every other call is kept, not run, as a
//! [`Value::Object`]. It must never execute anything, never panic and never
//! grow without bound on hostile input: objects live in an arena whose size
//! is capped ([`Limits`]), the memo holds arena ids so a memoised object is
//! shared as in Python (no copy per GET), and turning the arena into the
//! owned [`Value`] tree is capped in depth and size, so a pickle that
//! references one object many times cannot blow up exponentially.
//!
//! Storages are not read here: a tensor is a [`TensorInfo`] naming its
//! storage key, dtype, shape, stride and offset; `archive.rs` reads the bytes.

use std::collections::HashMap;
use std::fmt;

/// Caps that keep a hostile pickle from exhausting memory or the stack.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Objects the VM may create (arena entries).
    pub max_objects: usize,
    /// Values in the owned tree built from the arena (shared objects count
    /// once per place they appear).
    pub max_tree_values: usize,
    /// Nesting depth of the owned tree.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // A 48-layer state dict has ~2000 tensors of ~10 objects each; these
        // leave three orders of magnitude of room.
        Limits {
            max_objects: 8_000_000,
            max_tree_values: 8_000_000,
            max_depth: 200,
        }
    }
}

/// Why a pickle could not be read, with the byte offset of the opcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickleError {
    pub offset: usize,
    pub reason: String,
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for PickleError {}

/// Element type of a torch storage, named after the storage class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F16,
    BF16,
    F32,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    /// The dtype of a `torch.<Name>Storage` class.
    pub fn from_storage_class(name: &str) -> Option<DType> {
        Some(match name {
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// The name PyTorch prints (`torch.float16` without the `torch.`).
    pub fn torch_name(self) -> &'static str {
        match self {
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::I16 => "int16",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::Bool => "bool",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.torch_name())
    }
}

/// A storage as its persistent id names it: `('storage', torch.HalfStorage,
/// '<key>', '<location>', <numel>)`; the bytes are the archive entry
/// `<archive>/data/<key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    pub key: String,
    pub dtype: DType,
    pub numel: u64,
    pub location: String,
}

/// A tensor as `_rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`
/// describes it, in elements of the storage's dtype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub storage: StorageRef,
    pub storage_offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
}

impl TensorInfo {
    pub fn dtype(&self) -> DType {
        self.storage.dtype
    }

    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    /// The storage elements `[start, end)` the tensor reads, or `None` when the
    /// arithmetic overflows. An empty tensor reads nothing.
    pub fn storage_span(&self) -> Option<(u64, u64)> {
        if self.shape.contains(&0) {
            return Some((self.storage_offset, self.storage_offset));
        }
        let mut last = self.storage_offset;
        for (&size, &stride) in self.shape.iter().zip(&self.stride) {
            last = last.checked_add((size - 1).checked_mul(stride)?)?;
        }
        Some((self.storage_offset, last.checked_add(1)?))
    }
}

/// A Python object read from a pickle, as far as a checkpoint needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An int beyond i64, as pickle's little-endian two's complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// A dict or OrderedDict, in pickle (insertion) order.
    Dict(Vec<(Value, Value)>),
    Tensor(TensorInfo),
    Storage(StorageRef),
    /// A class or function named by GLOBAL / STACK_GLOBAL.
    Global {
        module: String,
        name: String,
    },
    /// A call the reader does not evaluate, kept as `callable(*args)` plus
    /// the BUILD state when one was applied.
    Object {
        callable: Box<Value>,
        args: Box<Value>,
        state: Option<Box<Value>>,
    },
}

impl Value {
    /// The value under a string key of a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items.iter().find_map(|(k, v)| match k {
                Value::Str(s) if s == key => Some(v),
                _ => None,
            }),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(items) => Some(items),
            _ => None,
        }
    }

    /// The string keys of a dict (others skipped), for error messages.
    pub fn keys(&self) -> Vec<&str> {
        self.as_dict()
            .map(|items| items.iter().filter_map(|(k, _)| k.as_str()).collect())
            .unwrap_or_default()
    }

    /// What kind of Python object this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) | Value::BigInt(_) => "an int",
            Value::Float(_) => "a float",
            Value::Str(_) => "a str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "a list",
            Value::Tuple(_) => "a tuple",
            Value::Dict(_) => "a dict",
            Value::Tensor(_) => "a tensor",
            Value::Storage(_) => "a storage",
            Value::Global { .. } => "a class or function",
            Value::Object { .. } => "an object",
        }
    }
}

type Id = usize;

/// Arena objects. Containers hold ids, so that what SETITEMS adds to a dict
/// is seen through every memo reference to it, as in Python.
#[derive(Debug)]
enum Node {
    None,
    Bool(bool),
    Int(i64),
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Id>),
    Tuple(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Global(String, String),
    PersistentId(Id),
    Tensor(TensorInfo),
    Object {
        callable: Id,
        args: Id,
        state: Option<Id>,
    },
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Mark,
    Obj(Id),
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being run, for errors.
    op_at: usize,
    arena: Vec<Node>,
    stack: Vec<Slot>,
    memo: HashMap<u64, Id>,
    limits: Limits,
}

/// Runs a pickle and returns the object it builds.
pub fn load(data: &[u8], limits: Limits) -> Result<Value, PickleError> {
    let mut m = Machine {
        data,
        pos: 0,
        op_at: 0,
        arena: Vec::new(),
        stack: Vec::new(),
        memo: HashMap::new(),
        limits,
    };
    let root = m.run()?;
    let mut budget = limits.max_tree_values;
    m.to_value(root, 0, &mut budget)
}

impl<'a> Machine<'a> {
    fn fail<T>(&self, reason: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError {
            offset: self.op_at,
            reason: reason.into(),
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.data.len() => {
                let bytes = &self.data[self.pos..end];
                self.pos = end;
                Ok(bytes)
            }
            _ => self.fail(format!(
                "truncated: needs {n} more bytes, {} left",
                self.data.len() - self.pos
            )),
        }
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn len(&mut self, n: u64) -> Result<usize, PickleError> {
        match usize::try_from(n) {
            Ok(n) if n <= self.data.len() - self.pos => Ok(n),
            _ => self.fail(format!(
                "truncated: a length of {n} bytes but {} left",
                self.data.len() - self.pos
            )),
        }
    }

    fn line(&mut self) -> Result<&'a [u8], PickleError> {
        let rest = &self.data[self.pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(n) => {
                self.pos += n + 1;
                Ok(&rest[..n])
            }
            None => self.fail("truncated: a text argument has no end of line"),
        }
    }

    fn utf8(&self, bytes: &[u8]) -> Result<String, PickleError> {
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => self.fail("a string is not valid UTF-8"),
        }
    }

    fn alloc(&mut self, node: Node) -> Result<Id, PickleError> {
        if self.arena.len() >= self.limits.max_objects {
            return self.fail(format!(
                "more than {} objects; refusing to read further",
                self.limits.max_objects
            ));
        }
        self.arena.push(node);
        Ok(self.arena.len() - 1)
    }

    fn push(&mut self, node: Node) -> Result<(), PickleError> {
        let id = self.alloc(node)?;
        self.stack.push(Slot::Obj(id));
        Ok(())
    }

    fn pop(&mut self) -> Result<Id, PickleError> {
        match self.stack.pop() {
            Some(Slot::Obj(id)) => Ok(id),
            Some(Slot::Mark) => self.fail("an object was expected but found a MARK"),
            None => self.fail("the stack is empty"),
        }
    }

    fn top(&self) -> Result<Id, PickleError> {
        match self.stack.last() {
            Some(Slot::Obj(id)) => Ok(*id),
            Some(Slot::Mark) => self.fail("an object was expected but found a MARK"),
            None => self.fail("the stack is empty"),
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<Id>, PickleError> {
        let Some(mark) = self.stack.iter().rposition(|s| matches!(s, Slot::Mark)) else {
            return self.fail("no MARK on the stack");
        };
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items
            .into_iter()
            .filter_map(|s| match s {
                Slot::Obj(id) => Some(id),
                Slot::Mark => None,
            })
            .collect())
    }

    fn memo_put(&mut self, key: u64) -> Result<(), PickleError> {
        let id = self.top()?;
        if self.memo.len() >= self.limits.max_objects {
            return self.fail("the memo is full");
        }
        self.memo.insert(key, id);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Result<(), PickleError> {
        match self.memo.get(&key) {
            Some(&id) => {
                self.stack.push(Slot::Obj(id));
                Ok(())
            }
            None => self.fail(format!("memo entry {key} was never stored")),
        }
    }

    fn str_of(&self, id: Id) -> Option<&str> {
        match &self.arena[id] {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    fn int_of(&self, id: Id) -> Option<i64> {
        match self.arena[id] {
            Node::Int(i) => Some(i),
            Node::Bool(b) => Some(b as i64),
            _ => None,
        }
    }

    fn tuple_of(&self, id: Id) -> Option<&[Id]> {
        match &self.arena[id] {
            Node::Tuple(items) | Node::List(items) => Some(items),
            _ => None,
        }
    }

    fn set_items(&mut self, dict: Id, pairs: &[Id]) -> Result<(), PickleError> {
        // An odd count: the last key has no value.
        if pairs.len() & 1 == 1 {
            return self.fail("SETITEMS with an odd number of items");
        }
        match &mut self.arena[dict] {
            Node::Dict(items) => {
                items.extend(pairs.chunks_exact(2).map(|kv| (kv[0], kv[1])));
                Ok(())
            }
            // A dict subclass we do not model: keep the items with the call.
            Node::Object { .. } => Ok(()),
            _ => self.fail("SETITEM(S) on an object that is not a dict"),
        }
    }

    fn append(&mut self, list: Id, values: &[Id]) -> Result<(), PickleError> {
        match &mut self.arena[list] {
            Node::List(items) => {
                items.extend_from_slice(values);
                Ok(())
            }
            Node::Object { .. } => Ok(()),
            _ => self.fail("APPEND(S) on an object that is not a list"),
        }
    }

    fn run(&mut self) -> Result<Id, PickleError> {
        loop {
            self.op_at = self.pos;
            let op = match self.take(1) {
                Ok(b) => b[0],
                Err(_) => return self.fail("truncated: ended before STOP"),
            };
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return self.fail(format!("unsupported pickle protocol {proto}"));
                    }
                }
                // FRAME: a length hint for buffered reading.
                0x95 => {
                    self.u64()?;
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Slot::Mark),
                b'0' => {
                    if self.stack.pop().is_none() {
                        return self.fail("POP on an empty stack");
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let id = self.top()?;
                    self.stack.push(Slot::Obj(id));
                }
                b'N' => self.push(Node::None)?,
                0x88 => self.push(Node::Bool(true))?,
                0x89 => self.push(Node::Bool(false))?,
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Node::Int(v.into()))?
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Node::Int(v.into()))?
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Node::Int(v.into()))?
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        u64::from(self.u8()?)
                    } else {
                        u64::from(self.u32()?)
                    };
                    let n = self.len(n)?;
                    let bytes = self.take(n)?;
                    let node = long_from_le(bytes);
                    self.push(node)?
                }
                b'I' | b'L' => {
                    let line = self.line()?;
                    let text = String::from_utf8_lossy(line);
                    let text = text.trim_end_matches('L');
                    let node = match text {
                        "00" => Node::Bool(false),
                        "01" => Node::Bool(true),
                        t => match t.parse::<i64>() {
                            Ok(v) => Node::Int(v),
                            Err(_) => return self.fail(format!("bad integer literal {t:?}")),
                        },
                    };
                    self.push(node)?
                }
                b'G' => {
                    // Pickle's floats are big-endian, unlike its ints.
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push(Node::Float(f64::from_be_bytes(a)))?
                }
                b'F' => {
                    let line = self.line()?;
                    match String::from_utf8_lossy(line).trim().parse::<f64>() {
                        Ok(v) => self.push(Node::Float(v))?,
                        Err(_) => return self.fail("bad float literal"),
                    }
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => u64::from(self.u32()?),
                        0x8c => u64::from(self.u8()?),
                        _ => self.u64()?,
                    };
                    let n = self.len(n)?;
                    let bytes = self.take(n)?;
                    let s = self.utf8(bytes)?;
                    self.push(Node::Str(s))?
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => u64::from(self.u32()?),
                        b'C' => u64::from(self.u8()?),
                        _ => self.u64()?,
                    };
                    let n = self.len(n)?;
                    let bytes = self.take(n)?.to_vec();
                    self.push(Node::Bytes(bytes))?
                }
                // Python 2 str: text if it decodes, else bytes.
                b'T' | b'U' => {
                    let n = if op == b'T' {
                        u64::from(self.u32()?)
                    } else {
                        u64::from(self.u8()?)
                    };
                    let n = self.len(n)?;
                    let bytes = self.take(n)?;
                    let node = match std::str::from_utf8(bytes) {
                        Ok(s) => Node::Str(s.to_owned()),
                        Err(_) => Node::Bytes(bytes.to_vec()),
                    };
                    self.push(node)?
                }
                b')' => self.push(Node::Tuple(Vec::new()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items))?
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Node::Tuple(items))?
                }
                b']' | 0x8f => self.push(Node::List(Vec::new()))?,
                b'l' | 0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Node::List(items))?
                }
                b'a' => {
                    let v = self.pop()?;
                    let list = self.top()?;
                    self.append(list, &[v])?
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.append(list, &items)?
                }
                b'}' => self.push(Node::Dict(Vec::new()))?,
                b'd' => {
                    let items = self.pop_mark()?;
                    let dict = self.alloc(Node::Dict(Vec::new()))?;
                    self.set_items(dict, &items)?;
                    self.stack.push(Slot::Obj(dict))
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let dict = self.top()?;
                    self.set_items(dict, &[k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let dict = self.top()?;
                    self.set_items(dict, &items)?
                }
                b'c' => {
                    let module = self.line()?;
                    let module = self.utf8(module)?;
                    let name = self.line()?;
                    let name = self.utf8(name)?;
                    self.push(Node::Global(module, name))?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (self.str_of(module), self.str_of(name)) {
                        (Some(m), Some(n)) => {
                            let node = Node::Global(m.to_owned(), n.to_owned());
                            self.push(node)?
                        }
                        _ => return self.fail("STACK_GLOBAL needs two strings"),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let id = self.call(callable, args)?;
                    self.stack.push(Slot::Obj(id))
                }
                0x81 => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let id = self.call(class, args)?;
                    self.stack.push(Slot::Obj(id))
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let id = self.call(class, args)?;
                    self.stack.push(Slot::Obj(id))
                }
                b'b' => {
                    let state = self.pop()?;
                    let obj = self.top()?;
                    // The state of a dict (OrderedDict's `_metadata`) or a
                    // tensor is its attributes, not its items: drop it.
                    if let Node::Object { state: s, .. } = &mut self.arena[obj] {
                        *s = Some(state);
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push(Node::PersistentId(pid))?
                }
                b'P' => {
                    let line = self.line()?;
                    let s = self.utf8(line)?;
                    let pid = self.alloc(Node::Str(s))?;
                    self.push(Node::PersistentId(pid))?
                }
                b'q' => {
                    let k = self.u8()?;
                    self.memo_put(k.into())?
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k.into())?
                }
                b'p' => {
                    let line = self.line()?;
                    match String::from_utf8_lossy(line).parse::<u64>() {
                        Ok(k) => self.memo_put(k)?,
                        Err(_) => return self.fail("bad PUT index"),
                    }
                }
                0x94 => {
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?
                }
                b'h' => {
                    let k = self.u8()?;
                    self.memo_get(k.into())?
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k.into())?
                }
                b'g' => {
                    let line = self.line()?;
                    match String::from_utf8_lossy(line).parse::<u64>() {
                        Ok(k) => self.memo_get(k)?,
                        Err(_) => return self.fail("bad GET index"),
                    }
                }
                other => {
                    return self.fail(format!("unsupported opcode 0x{other:02x}"));
                }
            }
        }
    }

    /// REDUCE / NEWOBJ: evaluate the callables a state dict is made of and
    /// keep every other call as data.
    fn call(&mut self, callable: Id, args: Id) -> Result<Id, PickleError> {
        let (module, name) = match &self.arena[callable] {
            Node::Global(m, n) => (m.as_str(), n.as_str()),
            _ => ("", ""),
        };
        match (module, name) {
            ("collections", "OrderedDict") | ("builtins", "dict") | ("__builtin__", "dict") => {
                let pairs: Vec<Id> = match self.tuple_of(args) {
                    Some([items]) => self
                        .tuple_of(*items)
                        .map(<[Id]>::to_vec)
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                let mut flat = Vec::with_capacity(pairs.len() * 2);
                for pair in pairs {
                    match self.tuple_of(pair) {
                        Some([k, v]) => flat.extend([*k, *v]),
                        _ => return self.fail("OrderedDict item is not a (key, value) pair"),
                    }
                }
                let dict = self.alloc(Node::Dict(Vec::new()))?;
                self.set_items(dict, &flat)?;
                Ok(dict)
            }
            ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
                let info = self.rebuild_tensor(args)?;
                self.alloc(Node::Tensor(info))
            }
            // Parameters and tensor subclasses wrap a rebuilt tensor: the
            // first argument (or, for _rebuild_from_type_v2, the call made of
            // its first and third) is the data.
            ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state") => match self.tuple_of(args) {
                Some([data, ..]) if matches!(self.arena[*data], Node::Tensor(_)) => Ok(*data),
                _ => self.fail(format!(
                    "{module}.{name}: the first argument is not a tensor"
                )),
            },
            ("torch._tensor", "_rebuild_from_type_v2") => match self.tuple_of(args) {
                Some([func, _type, inner, ..]) => {
                    let (func, inner) = (*func, *inner);
                    self.call(func, inner)
                }
                _ => self.fail("torch._tensor._rebuild_from_type_v2: expected 4 arguments"),
            },
            ("_codecs", "encode") => match self.tuple_of(args) {
                // Protocol 2 writes bytes as _codecs.encode(latin-1 text, 'latin1').
                Some([text, ..]) => match self.str_of(*text) {
                    Some(s) => {
                        let bytes: Option<Vec<u8>> =
                            s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
                        match bytes {
                            Some(b) => self.alloc(Node::Bytes(b)),
                            None => self.fail("_codecs.encode: text is not latin-1"),
                        }
                    }
                    None => self.fail("_codecs.encode: the first argument is not a str"),
                },
                _ => self.fail("_codecs.encode: expected arguments"),
            },
            _ => self.alloc(Node::Object {
                callable,
                args,
                state: None,
            }),
        }
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride,
    /// requires_grad, backward_hooks[, metadata])`, storage being the
    /// persistent id `('storage', torch.<Type>Storage, key, location, numel)`.
    fn rebuild_tensor(&self, args: Id) -> Result<TensorInfo, PickleError> {
        let Some(args) = self.tuple_of(args) else {
            return self.fail("_rebuild_tensor_v2: arguments are not a tuple");
        };
        if args.len() < 4 {
            return self.fail("_rebuild_tensor_v2: fewer than 4 arguments");
        }
        let storage = self.storage(args[0])?;
        let offset = self.count(args[1], "storage offset")?;
        let shape = self.dims(args[2], "size")?;
        let stride = self.dims(args[3], "stride")?;
        if shape.len() != stride.len() {
            return self.fail(format!(
                "_rebuild_tensor_v2: size has {} dimensions but stride {}",
                shape.len(),
                stride.len()
            ));
        }
        Ok(TensorInfo {
            storage,
            storage_offset: offset,
            shape,
            stride,
        })
    }

    fn storage(&self, id: Id) -> Result<StorageRef, PickleError> {
        let Node::PersistentId(pid) = self.arena[id] else {
            return self.fail("tensor storage is not a persistent id");
        };
        let Some(fields) = self.tuple_of(pid) else {
            return self.fail("storage persistent id is not a tuple");
        };
        let [tag, class, key, location, numel] = fields else {
            return self.fail(format!(
                "storage persistent id has {} fields, expected 5",
                fields.len()
            ));
        };
        if self.str_of(*tag) != Some("storage") {
            return self.fail("persistent id is not a storage");
        }
        let dtype = match &self.arena[*class] {
            Node::Global(module, name) if module == "torch" => {
                match DType::from_storage_class(name) {
                    Some(d) => d,
                    None => return self.fail(format!("unsupported storage type torch.{name}")),
                }
            }
            Node::Global(module, name) => {
                return self.fail(format!("unsupported storage type {module}.{name}"))
            }
            _ => return self.fail("storage type is not a class"),
        };
        let Some(key) = self.str_of(*key) else {
            return self.fail("storage key is not a str");
        };
        Ok(StorageRef {
            key: key.to_owned(),
            dtype,
            numel: self.count(*numel, "storage size")?,
            location: self.str_of(*location).unwrap_or("").to_owned(),
        })
    }

    fn count(&self, id: Id, what: &str) -> Result<u64, PickleError> {
        match self.int_of(id) {
            Some(v) if v >= 0 => Ok(v as u64),
            Some(v) => self.fail(format!("tensor {what} is negative ({v})")),
            None => self.fail(format!("tensor {what} is not an int")),
        }
    }

    fn dims(&self, id: Id, what: &str) -> Result<Vec<u64>, PickleError> {
        let Some(items) = self.tuple_of(id) else {
            return self.fail(format!("tensor {what} is not a tuple"));
        };
        items.iter().map(|&d| self.count(d, what)).collect()
    }

    /// Copies arena objects into the owned tree. Shared objects are copied
    /// once per reference, against a budget, so a small pickle cannot ask
    /// for an exponentially large tree; cycles hit the depth cap.
    fn to_value(&self, id: Id, depth: usize, budget: &mut usize) -> Result<Value, PickleError> {
        if depth > self.limits.max_depth {
            return Err(PickleError {
                offset: self.data.len(),
                reason: format!("objects nested deeper than {}", self.limits.max_depth),
            });
        }
        if *budget == 0 {
            return Err(PickleError {
                offset: self.data.len(),
                reason: format!(
                    "the object tree has more than {} values",
                    self.limits.max_tree_values
                ),
            });
        }
        *budget -= 1;
        let d = depth + 1;
        let all = |ids: &[Id], budget: &mut usize| -> Result<Vec<Value>, PickleError> {
            ids.iter().map(|&i| self.to_value(i, d, budget)).collect()
        };
        Ok(match &self.arena[id] {
            Node::None => Value::None,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::Int(*i),
            Node::BigInt(b) => Value::BigInt(b.clone()),
            Node::Float(f) => Value::Float(*f),
            Node::Str(s) => Value::Str(s.clone()),
            Node::Bytes(b) => Value::Bytes(b.clone()),
            Node::List(items) => Value::List(all(items, budget)?),
            Node::Tuple(items) => Value::Tuple(all(items, budget)?),
            Node::Dict(items) => Value::Dict(
                items
                    .iter()
                    .map(|&(k, v)| Ok((self.to_value(k, d, budget)?, self.to_value(v, d, budget)?)))
                    .collect::<Result<_, PickleError>>()?,
            ),
            Node::Global(module, name) => Value::Global {
                module: module.clone(),
                name: name.clone(),
            },
            Node::PersistentId(pid) => match self.storage(id) {
                Ok(storage) => Value::Storage(storage),
                Err(_) => Value::Object {
                    callable: Box::new(Value::Global {
                        module: "pickle".into(),
                        name: "persistent_load".into(),
                    }),
                    args: Box::new(self.to_value(*pid, d, budget)?),
                    state: None,
                },
            },
            Node::Tensor(info) => Value::Tensor(info.clone()),
            Node::Object {
                callable,
                args,
                state,
            } => Value::Object {
                callable: Box::new(self.to_value(*callable, d, budget)?),
                args: Box::new(self.to_value(*args, d, budget)?),
                state: match state {
                    Some(s) => Some(Box::new(self.to_value(*s, d, budget)?)),
                    None => None,
                },
            },
        })
    }
}

/// LONG1 / LONG4 payload: little-endian two's complement.
fn long_from_le(bytes: &[u8]) -> Node {
    if bytes.is_empty() {
        return Node::Int(0);
    }
    if bytes.len() <= 8 {
        let negative = bytes[bytes.len() - 1] & 0x80 != 0;
        let mut a = [if negative { 0xff } else { 0 }; 8];
        a[..bytes.len()].copy_from_slice(bytes);
        return Node::Int(i64::from_le_bytes(a));
    }
    Node::BigInt(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Result<Value, PickleError> {
        load(bytes, Limits::default())
    }

    #[test]
    fn reads_a_protocol_2_dict_of_scalars() {
        // pickle.dumps({'a': 1, 'b': [True, None, 1.5], 'c': 'é'}, protocol=2)
        let bytes = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00bq\x02]q\x03(\x88NG?\xf8\x00\x00\x00\x00\x00\x00eX\x01\x00\x00\x00cq\x04X\x02\x00\x00\x00\xc3\xa9q\x05u.";
        let v = run(bytes).unwrap();
        assert_eq!(v.get("a"), Some(&Value::Int(1)));
        assert_eq!(
            v.get("b"),
            Some(&Value::List(vec![
                Value::Bool(true),
                Value::None,
                Value::Float(1.5)
            ]))
        );
        assert_eq!(v.get("c").and_then(Value::as_str), Some("é"));
    }

    #[test]
    fn memo_references_share_the_filled_object() {
        // d = {}; [d, d] after d is filled: EMPTY_LIST, EMPTY_DICT, PUT 0,
        // fill, then GET 0, APPENDS.
        let bytes = b"\x80\x02](}q\x00X\x01\x00\x00\x00kK\x07sh\x00e.";
        let v = run(bytes).unwrap();
        let want = Value::Dict(vec![(Value::Str("k".into()), Value::Int(7))]);
        assert_eq!(v, Value::List(vec![want.clone(), want]));
    }

    #[test]
    fn long1_reads_negative_and_big_ints() {
        assert_eq!(run(b"\x80\x02\x8a\x01\xff.").unwrap(), Value::Int(-1));
        assert_eq!(
            run(b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.").unwrap(),
            Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 1])
        );
    }

    #[test]
    fn errors_name_the_offset_and_never_panic() {
        let err = run(b"\x80\x02X\xff\xff\xff\x7f").unwrap_err();
        assert!(err.reason.contains("truncated"), "{err}");
        let err = run(b"\x80\x02\xff").unwrap_err();
        assert_eq!(err.offset, 2);
        assert!(err.reason.contains("unsupported opcode 0xff"), "{err}");
        assert!(run(b"").is_err());
        assert!(run(b"\x80\x02.").is_err());
        assert!(run(b"\x80\x02h\x05.").is_err());
        assert!(run(b"\x80\x02(t(u.").is_err());
    }

    #[test]
    fn an_exponentially_shared_tree_hits_the_budget() {
        // x = []; then 40 times: x = (x, x) via DUP + TUPLE2.
        let mut bytes = b"\x80\x02]".to_vec();
        for _ in 0..40 {
            bytes.extend_from_slice(b"2\x86");
        }
        bytes.push(b'.');
        let limits = Limits {
            max_tree_values: 100_000,
            ..Limits::default()
        };
        let err = load(&bytes, limits).unwrap_err();
        assert!(err.reason.contains("more than 100000 values"), "{err}");
    }

    #[test]
    fn a_self_containing_list_hits_the_depth_cap() {
        // l = []; l.append(l): EMPTY_LIST, PUT 0, GET 0, APPEND.
        let err = run(b"\x80\x02]q\x00h\x00a.").unwrap_err();
        assert!(err.reason.contains("nested deeper"), "{err}");
    }
}
