//! A small coverage-guided fuzzer, in the manner of libFuzzer, with no dependency: the crates
//! are built with SanitizerCoverage's trace-pc-guard, whose callbacks (src/coverage.c) count
//! the edges each input reaches. An input that reaches an edge, or an edge's hit-count class, not
//! seen before joins the corpus; new inputs are mutations of corpus entries. A panic is a
//! finding: the input is saved and the run fails.
//!
//! `TARGET --seconds N --corpus DIR... [--artifacts DIR] [--max-len N]`: the first corpus
//! directory receives the new inputs; each is read at start. `TARGET FILE...` runs files once.
use std::{
    collections::hash_map::DefaultHasher,
    hash::{Hash as _, Hasher as _},
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

/// Slots of the coverage map (src/coverage.c).
const EDGES: usize = 1 << 20;

extern "C" {
    fn hostnetd_fuzz_slots() -> usize;
    fn hostnetd_fuzz_reset();
    fn hostnetd_fuzz_merge(seen: *mut u8, edges: *mut usize) -> usize;
}

struct Fuzzer {
    target: fn(&[u8]),
    /// Per edge, the hit-count classes seen so far.
    seen: Vec<u8>,
    edges: usize,
    corpus: Vec<Vec<u8>>,
    dictionary: Vec<Vec<u8>>,
    rng: u64,
    max_len: usize,
}

impl Fuzzer {
    fn used_slots(&self) -> usize {
        // SAFETY: reads a counter of the coverage callbacks.
        unsafe { hostnetd_fuzz_slots() }
    }

    /// Runs one input; whether it reached something new. A panic is Err.
    fn execute(&mut self, input: &[u8]) -> Result<bool, ()> {
        // SAFETY: clears the coverage map; the target runs on this thread only.
        unsafe { hostnetd_fuzz_reset() };
        let target = self.target;
        catch_unwind(AssertUnwindSafe(|| target(input))).map_err(drop)?;
        // SAFETY: `seen` has EDGES bytes, as many as the map has slots.
        let new = unsafe { hostnetd_fuzz_merge(self.seen.as_mut_ptr(), &mut self.edges) };
        Ok(new > 0)
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: fast, and good enough to pick mutations.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.random() % bound.max(1) as u64) as usize
    }

    fn mutate(&mut self, mut input: Vec<u8>) -> Vec<u8> {
        for _ in 0..=self.below(4) {
            self.mutate_once(&mut input);
        }
        input.truncate(self.max_len);
        input
    }

    fn mutate_once(&mut self, input: &mut Vec<u8>) {
        let at = self.below(input.len() + 1);
        let last = at.min(input.len().saturating_sub(1));
        match self.below(8) {
            0 if !input.is_empty() => {
                let bit = self.below(8);
                input[last] ^= 1 << bit;
            }
            1 if !input.is_empty() => {
                let byte = self.random() as u8;
                input[last] = byte;
            }
            2 => {
                const PUNCTUATION: &[u8] = b" -,:/[].0123456789\n\"{}=!";
                let pick = self.below(PUNCTUATION.len());
                let byte = PUNCTUATION[pick];
                input.insert(at, byte);
            }
            3 if !input.is_empty() => {
                let end = (at + 1 + self.below(8)).min(input.len());
                input.drain(at.min(end)..end);
            }
            4 if !self.dictionary.is_empty() => {
                let pick = self.below(self.dictionary.len());
                let word = self.dictionary[pick].clone();
                input.splice(at..at, word);
            }
            5 if !input.is_empty() => {
                let start = self.below(input.len());
                let end = (start + 1 + self.below(16)).min(input.len());
                let chunk = input[start..end].to_vec();
                input.splice(at..at, chunk);
            }
            6 => {
                let pick = self.below(self.corpus.len());
                let other = self.corpus[pick].clone();
                let from = self.below(other.len() + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            _ => {
                let digits = self.random().to_string();
                let len = 1 + self.below(digits.len());
                input.splice(at..at, digits.as_bytes()[..len].to_vec());
            }
        }
    }
}

/// The engine's entry point for one target; the process's exit code.
pub fn main(name: &str, target: fn(&[u8])) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match Options::parse(&args) {
        Ok(Options::Replay(files)) => replay(target, &files),
        Ok(Options::Fuzz(options)) => fuzz(name, target, &options),
        Err(message) => {
            eprintln!("{name}: {message}");
            ExitCode::from(2)
        }
    }
}

struct FuzzOptions {
    seconds: u64,
    corpus: Vec<PathBuf>,
    artifacts: PathBuf,
    dictionary: Option<PathBuf>,
    max_len: usize,
}

enum Options {
    Replay(Vec<PathBuf>),
    Fuzz(FuzzOptions),
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        if !args.is_empty() && args.iter().all(|arg| !arg.starts_with("--")) {
            return Ok(Self::Replay(args.iter().map(PathBuf::from).collect()));
        }
        let mut options = FuzzOptions {
            seconds: 20,
            corpus: Vec::new(),
            artifacts: PathBuf::from("artifacts"),
            dictionary: None,
            max_len: 4096,
        };
        let mut words = args.iter();
        while let Some(flag) = words.next() {
            let value = words.next().ok_or(format!("{flag} needs a value"))?;
            let number = || value.parse().map_err(|_| format!("{flag}: not a number"));
            match flag.as_str() {
                "--seconds" => options.seconds = number()?,
                "--max-len" => options.max_len = number()? as usize,
                "--corpus" => options.corpus.push(value.into()),
                "--artifacts" => options.artifacts = value.into(),
                "--dict" => options.dictionary = Some(value.into()),
                _ => return Err(format!("unknown flag {flag}; usage: TARGET --seconds N --corpus DIR... [--artifacts DIR] [--dict FILE] [--max-len N], or TARGET FILE...")),
            }
        }
        if options.corpus.is_empty() {
            return Err("give at least one --corpus DIR (new inputs go to the first)".into());
        }
        Ok(Self::Fuzz(options))
    }
}

fn replay(target: fn(&[u8]), files: &[PathBuf]) -> ExitCode {
    for file in files {
        let input = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        eprintln!("running {}", file.display());
        target(&input);
    }
    ExitCode::SUCCESS
}

fn fuzz(name: &str, target: fn(&[u8]), options: &FuzzOptions) -> ExitCode {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64 | 1);
    let mut fuzzer = Fuzzer {
        target,
        seen: vec![0; EDGES],
        edges: 0,
        corpus: Vec::new(),
        dictionary: options
            .dictionary
            .as_deref()
            .map(read_dictionary)
            .unwrap_or_default(),
        rng: seed,
        max_len: options.max_len,
    };
    let inputs = options.corpus.iter().flat_map(|dir| read_dir_files(dir));
    for input in inputs.chain([Vec::new()]) {
        match fuzzer.execute(&input) {
            Ok(_) => fuzzer.corpus.push(input),
            Err(()) => return found(name, &input, &options.artifacts),
        }
    }
    let loaded = fuzzer.corpus.len();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(options.seconds);
    let mut runs: u64 = 0;
    while Instant::now() < deadline {
        let pick = fuzzer.below(fuzzer.corpus.len());
        let parent = fuzzer.corpus[pick].clone();
        let input = fuzzer.mutate(parent);
        runs += 1;
        match fuzzer.execute(&input) {
            Ok(true) => {
                save(&options.corpus[0], &input);
                fuzzer.corpus.push(input);
            }
            Ok(false) => {}
            Err(()) => return found(name, &input, &options.artifacts),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{name}: {runs} runs in {seconds:.0}s ({:.0}/s), no panic; corpus {loaded} + {} new, {} edges of {}",
        runs as f64 / seconds.max(0.001),
        fuzzer.corpus.len() - loaded,
        fuzzer.edges,
        fuzzer.used_slots() - 1,
    );
    ExitCode::SUCCESS
}

/// A panicking input: saved as `artifacts/crash-HASH`, shown, and the run fails.
fn found(name: &str, input: &[u8], artifacts: &Path) -> ExitCode {
    let path = save(artifacts, input).map(|file| artifacts.join(file));
    eprintln!(
        "{name}: the input above panicked: {:?}\n  saved as {}; replay it with `{name} FILE`",
        String::from_utf8_lossy(input),
        path.map_or("(could not save it)".into(), |p| p.display().to_string())
    );
    ExitCode::FAILURE
}

/// Writes `input` into `dir` under its hash; the file name.
fn save(dir: &Path, input: &[u8]) -> Option<String> {
    let mut hasher = DefaultHasher::new();
    input.hash(&mut hasher);
    let file = format!("{:016x}", hasher.finish());
    std::fs::create_dir_all(dir).ok()?;
    std::fs::write(dir.join(&file), input).ok()?;
    Some(file)
}

fn read_dir_files(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|path| std::fs::read(path).ok())
        .collect()
}

/// libFuzzer's dictionary format: one `"word"` per line, `#` comments, `\"`, `\\`, `\xNN`.
fn read_dictionary(path: &Path) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let quoted = line.trim().strip_prefix('"')?.strip_suffix('"')?;
            Some(unescape(quoted))
        })
        .collect()
}

fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        match bytes.next() {
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let hex = String::from_utf8_lossy(&hex).into_owned();
                out.extend(u8::from_str_radix(&hex, 16).ok());
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}
