//! Reading PyTorch checkpoints written by `torch.save` (zip format) without Python.
//!
//! A small pickle virtual machine rebuilds the object tree of `data.pkl`: dicts, lists, tuples, strings,
//! numbers, bytes (also protocol 2's `_codecs.encode` form), tensors (`torch._utils._rebuild_tensor_v2` over
//! the persistent storages of the archive) and parameters. Any other class is kept as an opaque [`Value::Object`]
//! with its constructor arguments and `BUILD` state (an `argparse.Namespace` therefore exposes its fields), so a
//! checkpoint that pickles configuration objects still loads. Nothing is ever executed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::error::{Error, Result};

/// Element type of a tensor storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDtype {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageDtype {
    fn from_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::F32,
            "DoubleStorage" => Self::F64,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    fn read(self, b: &[u8]) -> f64 {
        match self {
            Self::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            Self::F64 => f64::from_le_bytes(b[..8].try_into().unwrap()),
            Self::F16 => burn::tensor::f16::from_le_bytes([b[0], b[1]]).to_f64(),
            Self::BF16 => burn::tensor::bf16::from_le_bytes([b[0], b[1]]).to_f64(),
            Self::I64 => i64::from_le_bytes(b[..8].try_into().unwrap()) as f64,
            Self::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            Self::I16 => i16::from_le_bytes([b[0], b[1]]) as f64,
            Self::I8 => b[0] as i8 as f64,
            Self::U8 | Self::Bool => b[0] as f64,
        }
    }
}

/// A storage of the archive (`data/<key>`).
#[derive(Debug)]
pub struct Storage {
    pub dtype: StorageDtype,
    pub key: String,
    pub numel: usize,
}

/// A strided view of a storage.
#[derive(Debug)]
pub struct TensorRef {
    pub storage: Rc<Storage>,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// A node of an unpickled object tree.
#[derive(Debug, Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// A class or function reference `module.name`.
    Global(String, String),
    /// An instance of a class that is not rebuilt: its class, constructor arguments and `BUILD` state.
    Object {
        class: Box<Value>,
        args: Box<Value>,
        state: Rc<RefCell<Option<Value>>>,
    },
    Storage(Rc<Storage>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    /// The value of `key` in a dict, or in the attribute dict of an object (e.g. an `argparse.Namespace`).
    pub fn get(&self, key: &str) -> Option<Value> {
        match self {
            Value::Dict(d) => {
                d.borrow().iter().find(|(k, _)| matches!(k, Value::Str(s) if s == key)).map(|(_, v)| v.clone())
            }
            Value::Object { state, .. } => state.borrow().as_ref().and_then(|s| s.get(key)),
            _ => None,
        }
    }

    /// An integer (booleans count as 0/1).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// A boolean (integers count as truthy/falsy).
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            Value::Int(i) => Some(*i != 0),
            _ => None,
        }
    }

    /// A float (integers are converted).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// A string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The items of a list or a tuple.
    pub fn as_items(&self) -> Option<Vec<Value>> {
        match self {
            Value::List(l) => Some(l.borrow().clone()),
            Value::Tuple(t) => Some(t.clone()),
            _ => None,
        }
    }
}

/// Unpickles `bytes` that Python's `pickle.dumps` wrote (protocols 2 to 5) and that hold no tensors: e.g. the
/// constructor arguments that a checkpoint keeps beside its weights as a pickled blob.
pub fn unpickle(bytes: &[u8]) -> std::result::Result<Value, String> {
    Machine { data: bytes, pos: 0, stack: vec![], marks: vec![], memo: HashMap::new() }.run()
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

type Pr<T> = std::result::Result<T, String>;

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Pr<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or("a pickle length beyond any file")?;
        let s = self.data.get(self.pos..end).ok_or("unexpected end of the pickle stream")?;
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Pr<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Pr<usize> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    }
    fn u32(&mut self) -> Pr<usize> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn u64(&mut self) -> Pr<usize> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()) as usize)
    }
    fn line(&mut self) -> Pr<String> {
        let rest = &self.data[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or("unterminated text line")?;
        self.pos += end + 1;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    }
    fn pop(&mut self) -> Pr<Value> {
        self.stack.pop().ok_or_else(|| "pickle stack underflow".to_string())
    }
    fn pop_mark(&mut self) -> Pr<Vec<Value>> {
        let m = self.marks.pop().ok_or("pickle MARK missing")?;
        if m > self.stack.len() {
            return Err("pickle MARK beyond the stack".into());
        }
        Ok(self.stack.split_off(m))
    }
    fn top(&mut self) -> Pr<&mut Value> {
        self.stack.last_mut().ok_or_else(|| "pickle stack underflow".to_string())
    }
    fn string(b: &[u8]) -> Pr<Value> {
        Ok(Value::Str(String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8 string")?))
    }

    fn run(mut self) -> Pr<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?;
                }
                0x95 => {
                    self.u64()?;
                }
                b'.' => return self.pop(),
                b'}' => self.stack.push(Value::Dict(Rc::default())),
                b']' | 0x8f => self.stack.push(Value::List(Rc::default())),
                b')' => self.stack.push(Value::Tuple(vec![])),
                b'(' => self.marks.push(self.stack.len()),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err("pickle stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = items.chunks_exact(2).map(|p| (p[0].clone(), p[1].clone())).collect();
                    self.stack.push(Value::Dict(Rc::new(RefCell::new(pairs))));
                }
                b'q' | b'r' | 0x94 => {
                    let key = match op {
                        b'q' => self.u8()? as u32,
                        b'r' => self.u32()? as u32,
                        _ => self.memo.len() as u32,
                    };
                    let v = self.top()?.clone();
                    self.memo.insert(key, v);
                }
                b'h' | b'j' => {
                    let key = if op == b'h' { self.u8()? as u32 } else { self.u32()? as u32 };
                    let v = self.memo.get(&key).cloned().ok_or("pickle memo key missing")?;
                    self.stack.push(v);
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => self.u32()?,
                        0x8c => self.u8()? as usize,
                        _ => self.u64()?,
                    };
                    let b = self.take(n)?;
                    self.stack.push(Self::string(b)?);
                }
                b'T' | b'U' => {
                    let n = if op == b'T' { self.u32()? } else { self.u8()? as usize };
                    let b = self.take(n)?;
                    self.stack.push(Value::Str(String::from_utf8_lossy(b).into_owned()));
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => self.u32()?,
                        b'C' => self.u8()? as usize,
                        _ => self.u64()?,
                    };
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b'J' => {
                    let b = self.take(4)?;
                    self.stack.push(Value::Int(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64));
                }
                b'K' => {
                    let v = self.u8()? as i64;
                    self.stack.push(Value::Int(v));
                }
                b'M' => {
                    let v = self.u16()? as i64;
                    self.stack.push(Value::Int(v));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { self.u8()? as usize } else { self.u32()? };
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err("integer too large".into());
                    }
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) { [0xffu8; 8] } else { [0u8; 8] };
                    buf[..n].copy_from_slice(b);
                    self.stack.push(Value::Int(i64::from_le_bytes(buf)));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.stack.push(Value::Float(v));
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(module, name));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => return Err("STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = reduce(func, args)?;
                    self.stack.push(v);
                }
                0x81 | 0x92 => {
                    if op == 0x92 {
                        self.pop()?; // kwargs
                    }
                    let args = self.pop()?;
                    let class = self.pop()?;
                    self.stack.push(Value::Object {
                        class: Box::new(class),
                        args: Box::new(args),
                        state: Rc::default(),
                    });
                }
                b'b' => {
                    let state = self.pop()?;
                    match self.top()? {
                        Value::Object { state: s, .. } => *s.borrow_mut() = Some(state),
                        Value::Dict(d) => {
                            if let Value::Dict(extra) = state {
                                d.borrow_mut().extend(extra.borrow().iter().cloned());
                            }
                        }
                        _ => {}
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(persistent_load(pid)?);
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        Value::Dict(d) => d.borrow_mut().push((k, v)),
                        Value::Object { .. } => {}
                        _ => return Err("SETITEM on a non-dict".into()),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::Dict(d) => {
                            d.borrow_mut().extend(items.chunks_exact(2).map(|p| (p[0].clone(), p[1].clone())))
                        }
                        Value::Object { .. } => {}
                        _ => return Err("SETITEMS on a non-dict".into()),
                    }
                }
                b'a' => {
                    let v = self.pop()?;
                    if let Value::List(l) = self.top()? {
                        l.borrow_mut().push(v);
                    }
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    if let Value::List(l) = self.top()? {
                        l.borrow_mut().extend(items);
                    }
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                other => return Err(format!("unsupported pickle opcode 0x{other:02x} at byte {}", self.pos - 1)),
            }
        }
    }
}

fn persistent_load(pid: Value) -> Pr<Value> {
    let Value::Tuple(t) = pid else { return Err("persistent id is not a tuple".into()) };
    match t.as_slice() {
        [Value::Str(kind), Value::Global(_, class), Value::Str(key), _location, numel] if kind == "storage" => {
            let dtype = StorageDtype::from_class(class).ok_or_else(|| format!("unsupported storage type {class}"))?;
            let numel = non_negative(numel, "storage size")?;
            Ok(Value::Storage(Rc::new(Storage { dtype, key: key.clone(), numel })))
        }
        _ => Err(format!("unsupported persistent id {t:?}")),
    }
}

/// A size, stride or offset: a non-negative integer.
fn non_negative(v: &Value, what: &str) -> Pr<usize> {
    let n = v.as_i64().ok_or_else(|| format!("{what} is not an integer"))?;
    usize::try_from(n).map_err(|_| format!("{what} is negative ({n})"))
}

fn ints(v: &Value) -> Pr<Vec<usize>> {
    match v {
        Value::Tuple(items) => items.iter().map(|i| non_negative(i, "a tensor size or stride")).collect(),
        _ => Err("tensor size/stride is not a tuple".into()),
    }
}

fn reduce(func: Value, args: Value) -> Pr<Value> {
    let Value::Global(module, name) = &func else {
        return Ok(Value::Object { class: Box::new(func), args: Box::new(args), state: Rc::default() });
    };
    let items = match &args {
        Value::Tuple(t) => t.clone(),
        _ => vec![],
    };
    match (module.as_str(), name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor" | "_rebuild_tensor_v3") => {
            let [Value::Storage(s), offset, size, stride, ..] = items.as_slice() else {
                return Err("unexpected arguments of _rebuild_tensor_v2".into());
            };
            Ok(Value::Tensor(Rc::new(TensorRef {
                storage: s.clone(),
                offset: non_negative(offset, "a storage offset")?,
                shape: ints(size)?,
                stride: ints(stride)?,
            })))
        }
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            items.into_iter().next().ok_or_else(|| "empty parameter".to_string())
        }
        ("torch._tensor", "_rebuild_from_type_v2") => {
            let [f, _, a, _] = items.as_slice() else {
                return Err("unexpected _rebuild_from_type_v2 arguments".into());
            };
            reduce(f.clone(), a.clone())
        }
        ("collections", "OrderedDict") => Ok(Value::Dict(Rc::default())),
        ("_codecs", "encode") => match items.first() {
            Some(Value::Str(s)) => Ok(Value::Bytes(s.chars().map(|c| c as u32 as u8).collect())),
            _ => Err("unexpected _codecs.encode arguments".into()),
        },
        _ => Ok(Value::Object { class: Box::new(func), args: Box::new(args), state: Rc::default() }),
    }
}

/// An open `torch.save` zip archive and its unpickled object tree.
pub struct TorchFile {
    path: PathBuf,
    archive: RefCell<zip::ZipArchive<BufReader<std::fs::File>>>,
    prefix: String,
    root: Value,
    cache: RefCell<HashMap<String, Rc<Vec<u8>>>>,
}

impl std::fmt::Debug for TorchFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchFile").field("path", &self.path).finish()
    }
}

impl TorchFile {
    /// Opens a checkpoint and unpickles its object tree (tensor data is read lazily).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
            Error::file(
                path,
                format!(
                    "is not a PyTorch zip checkpoint ({e}); files from torch < 1.6 must be re-saved with a recent \
                     torch.save, and the file may be truncated or corrupt"
                ),
            )
        })?;
        let pkl = (0..archive.len())
            .filter_map(|i| archive.name_for_index(i).map(str::to_string))
            .find(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
            .ok_or_else(|| Error::file(path, "is a zip file without data.pkl: not a PyTorch checkpoint"))?;
        let prefix = pkl.strip_suffix("data.pkl").unwrap_or("").to_string();
        let mut bytes = Vec::new();
        archive
            .by_name(&pkl)
            .and_then(|mut f| f.read_to_end(&mut bytes).map_err(Into::into))
            .map_err(|e| Error::file(path, format!("cannot read {pkl}: {e}")))?;
        // torch.save records the byte order of the storages; they are read as little-endian.
        let mut order = String::new();
        if let Ok(mut f) = archive.by_name(&format!("{prefix}byteorder")) {
            f.read_to_string(&mut order).ok();
        }
        if order.trim() == "big" {
            return Err(Error::file(
                path,
                "holds big-endian tensors (saved on a big-endian machine): load it with torch on a little-endian \
                 machine and save it again",
            ));
        }
        let machine = Machine { data: &bytes, pos: 0, stack: vec![], marks: vec![], memo: HashMap::new() };
        let root = machine.run().map_err(|e| Error::file(path, format!("cannot unpickle {pkl}: {e}")))?;
        Ok(Self { path: path.to_path_buf(), archive: RefCell::new(archive), prefix, root, cache: RefCell::default() })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The unpickled top-level object.
    pub fn root(&self) -> &Value {
        &self.root
    }

    /// Every tensor reachable through (nested) dicts, with dotted keys (`state_dict.transformer.head.weight`).
    /// Dicts nested deeper than 32 levels (a checkpoint has 3 or 4; a dict that holds itself has any number) are not
    /// entered.
    pub fn tensors(&self) -> Vec<(String, Rc<TensorRef>)> {
        fn walk(v: &Value, path: &str, out: &mut Vec<(String, Rc<TensorRef>)>, depth: usize) {
            match v {
                Value::Tensor(t) => out.push((path.to_string(), t.clone())),
                Value::Dict(d) if depth < 32 => {
                    for (k, v) in d.borrow().iter() {
                        let key = match k {
                            Value::Str(s) => s.clone(),
                            Value::Int(i) => i.to_string(),
                            _ => continue,
                        };
                        let p = if path.is_empty() { key } else { format!("{path}.{key}") };
                        walk(v, &p, out, depth + 1);
                    }
                }
                _ => {}
            }
        }
        let mut out = vec![];
        walk(&self.root, "", &mut out, 0);
        out
    }

    fn storage_bytes(&self, s: &Storage) -> Result<Rc<Vec<u8>>> {
        let name = format!("{}data/{}", self.prefix, s.key);
        let need = s.numel.checked_mul(s.dtype.size()).ok_or_else(|| {
            Error::file(
                &self.path,
                format!("tensor storage {name} claims {} elements, more than any file holds", s.numel),
            )
        })?;
        let truncated =
            |len: usize| Error::file(&self.path, format!("tensor storage {name} is truncated ({len} of {need} bytes)"));
        if let Some(b) = self.cache.borrow().get(&s.key) {
            // Another tensor's view of the same storage may claim more elements than were read for the first.
            return if b.len() < need { Err(truncated(b.len())) } else { Ok(b.clone()) };
        }
        let mut bytes = Vec::new();
        self.archive
            .borrow_mut()
            .by_name(&name)
            .and_then(|mut f| f.read_to_end(&mut bytes).map_err(Into::into))
            .map_err(|e| Error::file(&self.path, format!("cannot read tensor storage {name}: {e}")))?;
        if bytes.len() < need {
            return Err(truncated(bytes.len()));
        }
        let bytes = Rc::new(bytes);
        // Storages shared by several tensors are read once; large ones are not kept (memory).
        if need < (64 << 20) {
            self.cache.borrow_mut().insert(s.key.clone(), bytes.clone());
        }
        Ok(bytes)
    }

    /// The elements of a tensor in C order, converted to `f32`.
    pub fn read_f32(&self, t: &TensorRef) -> Result<Vec<f32>> {
        let bytes = self.storage_bytes(&t.storage)?;
        let size = t.storage.dtype.size();
        let beyond = || Error::file(&self.path, "a tensor view reaches beyond its storage");
        let numel = t.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(beyond)?;
        let contiguous = {
            let mut expect = 1;
            t.shape.iter().zip(&t.stride).rev().all(|(&d, &s)| {
                let ok = d == 1 || s == expect;
                expect *= d;
                ok
            })
        };
        // In u128: a damaged stride or offset must not wrap around into the storage.
        let max_index = t.offset as u128
            + t.shape.iter().zip(&t.stride).map(|(&d, &s)| d.saturating_sub(1) as u128 * s as u128).sum::<u128>();
        if numel == 0 {
            // An empty view reads nothing, wherever its (possibly damaged) offset points.
            return Ok(vec![]);
        }
        if max_index >= t.storage.numel as u128 {
            return Err(beyond());
        }
        let mut out = Vec::with_capacity(numel);
        if contiguous && t.storage.dtype == StorageDtype::F32 {
            let b = &bytes[t.offset * 4..(t.offset + numel) * 4];
            out.extend(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
            return Ok(out);
        }
        let mut index = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let at = t.offset + index.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            out.push(t.storage.dtype.read(&bytes[at * size..]) as f32);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < t.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A PyTorch-style zip checkpoint holding `pickle` as `archive/data.pkl` and 16 bytes of storage `0`
    /// (four f32: 1, 2, 3, 4).
    fn checkpoint(name: &str, pickle: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("nbp-pickle-{name}-{}.pt", std::process::id()));
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        zip.start_file("archive/data.pkl", opts).unwrap();
        zip.write_all(pickle).unwrap();
        if let Some(order) = name.strip_prefix("order-") {
            zip.start_file("archive/byteorder", opts).unwrap();
            zip.write_all(order.as_bytes()).unwrap();
        }
        zip.start_file("archive/data/0", opts).unwrap();
        for v in [1.0f32, 2.0, 3.0, 4.0] {
            zip.write_all(&v.to_le_bytes()).unwrap();
        }
        zip.finish().unwrap();
        path
    }

    fn int(out: &mut Vec<u8>, v: i32) {
        out.push(b'J');
        out.extend(v.to_le_bytes());
    }

    fn text(out: &mut Vec<u8>, s: &str) {
        out.push(b'X');
        out.extend((s.len() as u32).to_le_bytes());
        out.extend(s.as_bytes());
    }

    /// `{name: tensor}` for each `(name, numel, offset, size, stride)`, all views of storage `0`, as
    /// `torch.save` pickles them (`_rebuild_tensor_v2` of a persistent storage id).
    fn tensors(views: &[(&str, i32, i32, i32, i32)]) -> Vec<u8> {
        let mut p = b"\x80\x02}".to_vec();
        for &(name, numel, offset, size, stride) in views {
            text(&mut p, name);
            p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
            text(&mut p, "storage");
            p.extend(b"ctorch\nFloatStorage\n");
            text(&mut p, "0");
            text(&mut p, "cpu");
            int(&mut p, numel);
            p.extend(b"tQ");
            int(&mut p, offset);
            p.push(b'(');
            int(&mut p, size);
            p.extend(b"t(");
            int(&mut p, stride);
            p.extend(b"t\x89}tRs");
        }
        p.push(b'.');
        p
    }

    #[test]
    fn damaged_sizes_offsets_and_shared_storages_are_errors_not_panics() {
        let path = checkpoint("fine", &tensors(&[("w", 4, 1, 3, 1)]));
        let f = TorchFile::open(&path).unwrap();
        let [(name, t)] = f.tensors().try_into().unwrap();
        assert_eq!((name.as_str(), f.read_f32(&t).unwrap()), ("w", vec![2.0, 3.0, 4.0]));
        for (name, views, expected) in [
            ("numel", vec![("w", -1, 0, 4, 1)], "storage size is negative (-1)"),
            ("offset", vec![("w", 4, -1, 4, 1)], "a storage offset is negative (-1)"),
            ("stride", vec![("w", 4, 0, 4, -32)], "a tensor size or stride is negative (-32)"),
        ] {
            let path = checkpoint(name, &tensors(&views));
            let e = TorchFile::open(&path).unwrap_err().to_string();
            assert!(e.contains("cannot unpickle") && e.contains(expected), "{name}: {e}");
            std::fs::remove_file(path).unwrap();
        }
        // A second view of a storage read (and cached) for the first one claims far more elements than it has.
        let path2 = checkpoint("shared", &tensors(&[("a", 4, 0, 4, 1), ("b", 100_000, 5000, 4, 1)]));
        let f2 = TorchFile::open(&path2).unwrap();
        let views: HashMap<String, Rc<TensorRef>> = f2.tensors().into_iter().collect();
        assert_eq!(f2.read_f32(&views["a"]).unwrap(), [1.0, 2.0, 3.0, 4.0]);
        let e = f2.read_f32(&views["b"]).unwrap_err().to_string();
        assert!(e.contains("tensor storage archive/data/0 is truncated (16 of 400000 bytes)"), "{e}");
        // An empty view whose damaged offset points far past the storage reads nothing.
        let path4 = checkpoint("empty", &tensors(&[("w", 4, 1 << 30, 0, 1)]));
        let f4 = TorchFile::open(&path4).unwrap();
        assert_eq!(f4.read_f32(&f4.tensors()[0].1).unwrap(), Vec::<f32>::new());
        std::fs::remove_file(path4).unwrap();
        // A view whose stride reaches past the storage.
        let path3 = checkpoint("reach", &tensors(&[("w", 4, 0, 4, 1 << 30)]));
        let f3 = TorchFile::open(&path3).unwrap();
        let e = f3.read_f32(&f3.tensors()[0].1).unwrap_err().to_string();
        assert!(e.contains("reaches beyond its storage"), "{e}");
        for p in [path, path2, path3] {
            std::fs::remove_file(p).unwrap();
        }
    }

    #[test]
    fn big_endian_storages_are_refused_little_endian_ones_read() {
        let little = checkpoint("order-little", &tensors(&[("w", 4, 0, 4, 1)]));
        let f = TorchFile::open(&little).unwrap();
        assert_eq!(f.read_f32(&f.tensors()[0].1).unwrap(), [1.0, 2.0, 3.0, 4.0]);
        let big = checkpoint("order-big", &tensors(&[("w", 4, 0, 4, 1)]));
        let e = TorchFile::open(&big).unwrap_err().to_string();
        assert!(e.contains("holds big-endian tensors"), "{e}");
        for p in [little, big] {
            std::fs::remove_file(p).unwrap();
        }
    }

    #[test]
    fn a_dict_that_holds_itself_is_walked_to_a_finite_depth() {
        // d = {}; d['a'] = d
        let path = checkpoint("cycle", b"\x80\x02}q\x00X\x01\x00\x00\x00ah\x00s.");
        let f = TorchFile::open(&path).unwrap();
        assert!(f.tensors().is_empty());
        std::fs::remove_file(path).unwrap();
    }
}
