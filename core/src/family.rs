//! The AudioCraft model families a deployment can serve: MusicGen for
//! music, AudioGen for sound effects. Each has its own queue and workers.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Which AudioCraft model family serves a task.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ModelFamily {
    /// MusicGen: music from a description.
    Music,
    /// AudioGen: sound effects from a description.
    Audio,
}

impl ModelFamily {
    pub const ALL: [ModelFamily; 2] = [ModelFamily::Music, ModelFamily::Audio];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelFamily::Music => "music",
            ModelFamily::Audio => "audio",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "music" => Some(ModelFamily::Music),
            "audio" => Some(ModelFamily::Audio),
            _ => None,
        }
    }
}

impl fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
