//! The eBPF programs' own logging (aya-log), chosen when the datapath is loaded.

/// How much the eBPF programs log through aya-log. Fixed when the datapath is loaded: the
/// verifier prunes disabled statements, so logging off costs nothing per packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum BpfLogLevel {
    #[default]
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl BpfLogLevel {
    const NAMES: [&'static str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

    /// aya-log's `AYA_LOG_LEVEL`: 0 disables every statement.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl std::str::FromStr for BpfLogLevel {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let levels = [
            Self::Off,
            Self::Error,
            Self::Warn,
            Self::Info,
            Self::Debug,
            Self::Trace,
        ];
        (Self::NAMES.iter().zip(levels))
            .find_map(|(name, level)| name.eq_ignore_ascii_case(text).then_some(level))
            .ok_or_else(|| {
                format!(
                    "invalid eBPF log level {text:?}: use {}",
                    Self::NAMES.join(", ")
                )
            })
    }
}
