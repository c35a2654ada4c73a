//! The two network architectures and the heads on top of them.
//!
//! Every network maps a batch of u8 windows `[B, bands, frames]` to an embedding
//! `[B, D]`; a classifier head turns the embedding into genre logits and a
//! projection head turns it into the vector the contrastive loss compares. Only
//! the embedding is used after training.

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, ModuleT};
use tch::{Kind, Tensor};

use crate::error::ModelError;

/// Which network to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// The 2017 network, reproduced as published: four blocks of (2×2 conv with
    /// stride 2, ELU, 2×2 max-pool) with 64/128/256/512 filters, dense 128 ELU,
    /// dropout 0.5, dense classes. Input: the window replicated into 3 channels
    /// and scaled to [0, 1]. Its embedding is the 128-d dense layer.
    Seed,
    /// A CNN for log-mel windows: 3×3 conv + batch-norm blocks, pooling that
    /// folds frequency away, mean and max pooling over time, a linear embedding.
    Default,
}

impl Architecture {
    pub fn parse(name: &str) -> Result<Self, ModelError> {
        match name {
            "seed" => Ok(Self::Seed),
            "default" | "" => Ok(Self::Default),
            other => Err(ModelError::Config(format!(
                "unknown architecture {other:?} (expected default or seed)"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seed => "seed",
            Self::Default => "default",
        }
    }
}

/// What the network is trained to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Cross-entropy over the genre labels of the catalogue.
    Genre,
    /// Label-free NT-Xent: two windows of one track are a positive pair, the
    /// other tracks in the batch are the negatives.
    Contrastive,
}

impl Objective {
    pub fn parse(name: &str) -> Result<Self, ModelError> {
        match name {
            "genre" | "" => Ok(Self::Genre),
            "contrastive" => Ok(Self::Contrastive),
            other => Err(ModelError::Config(format!(
                "unknown objective {other:?} (expected genre or contrastive)"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Genre => "genre",
            Self::Contrastive => "contrastive",
        }
    }
}

/// Everything needed to rebuild a network with the same variable names and shapes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub architecture: Architecture,
    pub objective: Objective,
    /// Rows of a window (mel bands or linear bins).
    pub bands: usize,
    /// Columns of a window (time frames).
    pub frames: usize,
    pub embedding_dim: usize,
    /// Number of genre classes; 0 for a contrastive model.
    pub n_classes: usize,
    /// Channels of the first block of the `default` network; later blocks double it.
    pub width: usize,
    pub dropout: f64,
    /// Output size of the contrastive projection head.
    pub projection_dim: usize,
}

/// Filters of the seed network's four blocks.
const SEED_FILTERS: [i64; 4] = [64, 128, 256, 512];

impl ModelSpec {
    /// Checks that the window geometry fits the architecture.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.embedding_dim == 0 {
            return Err(ModelError::Config("embedding_dim must be positive".into()));
        }
        if self.objective == Objective::Genre && self.n_classes < 2 {
            return Err(ModelError::Config(format!(
                "the genre objective needs at least 2 classes, found {}",
                self.n_classes
            )));
        }
        match self.architecture {
            Architecture::Seed => {
                let (h, w) = seed_output_hw(self.bands, self.frames);
                if h == 0 || w == 0 {
                    return Err(ModelError::Config(format!(
                        "the seed architecture needs windows of at least 256×256 (the seed \
                         front-end); got {}×{}",
                        self.bands, self.frames
                    )));
                }
            }
            Architecture::Default => {
                if self.bands < 16 || self.frames < 16 {
                    return Err(ModelError::Config(format!(
                        "the default architecture needs windows of at least 16×16; got {}×{}",
                        self.bands, self.frames
                    )));
                }
                if self.width == 0 {
                    return Err(ModelError::Config("width must be positive".into()));
                }
            }
        }
        Ok(())
    }
}

/// Spatial size after the seed network's four (conv stride 2, pool 2) blocks.
fn seed_output_hw(bands: usize, frames: usize) -> (usize, usize) {
    let shrink = |mut n: usize| {
        for _ in 0..4 {
            n /= 2; // conv 2×2 stride 2, valid padding
            n /= 2; // max-pool 2×2
        }
        n
    };
    (shrink(bands), shrink(frames))
}

/// A network with its heads.
#[derive(Debug)]
pub struct Network {
    spec: ModelSpec,
    body: Body,
    classifier: Option<nn::Linear>,
    projection: Option<(nn::Linear, nn::Linear)>,
}

#[derive(Debug)]
enum Body {
    Seed(SeedBody),
    Default(DefaultBody),
}

#[derive(Debug)]
struct SeedBody {
    convs: Vec<nn::Conv2D>,
    dense: nn::Linear,
}

#[derive(Debug)]
struct ConvBlock {
    conv: nn::Conv2D,
    norm: nn::BatchNorm,
}

#[derive(Debug)]
struct DefaultBody {
    blocks: Vec<ConvBlock>,
    embed: nn::Linear,
}

impl Network {
    /// Creates the network's variables under `root` (names are stable: checkpoints
    /// and model artefacts are keyed by them).
    pub fn new(root: &nn::Path, spec: &ModelSpec) -> Result<Self, ModelError> {
        spec.validate()?;
        let body = match spec.architecture {
            Architecture::Seed => Body::Seed(SeedBody::new(&(root / "body"), spec)),
            Architecture::Default => Body::Default(DefaultBody::new(&(root / "body"), spec)),
        };
        let d = spec.embedding_dim as i64;
        let classifier = (spec.objective == Objective::Genre).then(|| {
            nn::linear(
                root / "classifier",
                d,
                spec.n_classes as i64,
                Default::default(),
            )
        });
        let projection = (spec.objective == Objective::Contrastive).then(|| {
            let p = root / "projection";
            (
                nn::linear(&p / "hidden", d, d, Default::default()),
                nn::linear(
                    &p / "out",
                    d,
                    spec.projection_dim as i64,
                    Default::default(),
                ),
            )
        });
        Ok(Self {
            spec: spec.clone(),
            body,
            classifier,
            projection,
        })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Turns u8 windows `[B, bands, frames]` (any device) into the network's
    /// float input.
    pub fn prepare_input(&self, windows: &Tensor) -> Tensor {
        let x = windows.to_kind(Kind::Float) / 255.0;
        match self.spec.architecture {
            // The original loaded greyscale images as RGB, so three equal channels.
            Architecture::Seed => x.unsqueeze(1).expand([-1, 3, -1, -1], false).contiguous(),
            Architecture::Default => x.unsqueeze(1),
        }
    }

    /// The embedding of prepared input `[B, C, bands, frames]`.
    pub fn embed(&self, input: &Tensor, train: bool) -> Tensor {
        match &self.body {
            Body::Seed(b) => b.forward_t(input, train),
            Body::Default(b) => b.forward_t(input, train),
        }
    }

    /// Genre logits from an embedding; `None` for a contrastive model.
    pub fn classify(&self, embedding: &Tensor, train: bool) -> Option<Tensor> {
        let head = self.classifier.as_ref()?;
        let hidden = match self.spec.architecture {
            // The seed embedding is already the post-ELU dense layer.
            Architecture::Seed => embedding.shallow_clone(),
            Architecture::Default => embedding.relu(),
        };
        Some(head.forward(&hidden.dropout(self.spec.dropout, train)))
    }

    /// Contrastive projection of an embedding; `None` for a genre model.
    pub fn project(&self, embedding: &Tensor) -> Option<Tensor> {
        let (hidden, out) = self.projection.as_ref()?;
        Some(out.forward(&hidden.forward(embedding).relu()))
    }
}

impl SeedBody {
    fn new(p: &nn::Path, spec: &ModelSpec) -> Self {
        let config = nn::ConvConfig {
            stride: 2,
            ..Default::default()
        };
        let mut in_channels = 3;
        let mut convs = Vec::with_capacity(SEED_FILTERS.len());
        for (i, &filters) in SEED_FILTERS.iter().enumerate() {
            convs.push(nn::conv2d(
                p / format!("conv{i}"),
                in_channels,
                filters,
                2,
                config,
            ));
            in_channels = filters;
        }
        let (h, w) = seed_output_hw(spec.bands, spec.frames);
        let flat = SEED_FILTERS[3] * (h * w) as i64;
        let dense = nn::linear(
            p / "dense",
            flat,
            spec.embedding_dim as i64,
            Default::default(),
        );
        Self { convs, dense }
    }

    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        let mut x = x.shallow_clone();
        for conv in &self.convs {
            x = conv
                .forward(&x)
                .elu()
                .max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
        }
        self.dense.forward(&x.flatten(1, -1)).elu()
    }
}

impl DefaultBody {
    fn new(p: &nn::Path, spec: &ModelSpec) -> Self {
        let config = nn::ConvConfig {
            padding: 1,
            bias: false,
            ..Default::default()
        };
        let mut in_channels = 1;
        let mut blocks = Vec::new();
        let mut channels = spec.width as i64;
        for i in 0..4 {
            blocks.push(ConvBlock {
                conv: nn::conv2d(p / format!("conv{i}"), in_channels, channels, 3, config),
                norm: nn::batch_norm2d(p / format!("norm{i}"), channels, Default::default()),
            });
            in_channels = channels;
            channels *= 2;
        }
        // Mean and max over time are concatenated.
        let embed = nn::linear(
            p / "embed",
            2 * in_channels,
            spec.embedding_dim as i64,
            Default::default(),
        );
        Self { blocks, embed }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut x = x.shallow_clone();
        for block in &self.blocks {
            x = block
                .norm
                .forward_t(&block.conv.forward(&x), train)
                .relu()
                .max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
        }
        // [B, C, F, T]: fold what is left of frequency, then summarise time twice.
        let over_time = x.mean_dim(2, false, Kind::Float);
        let mean = over_time.mean_dim(2, false, Kind::Float);
        let max = over_time.amax(2, false);
        self.embed.forward(&Tensor::cat(&[mean, max], 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device};

    fn spec(
        architecture: Architecture,
        objective: Objective,
        bands: usize,
        frames: usize,
    ) -> ModelSpec {
        ModelSpec {
            architecture,
            objective,
            bands,
            frames,
            embedding_dim: 16,
            n_classes: 3,
            width: 4,
            dropout: 0.5,
            projection_dim: 8,
        }
    }

    #[test]
    fn seed_network_has_the_published_shapes() {
        let vs = VarStore::new(Device::Cpu);
        let mut s = spec(Architecture::Seed, Objective::Genre, 256, 256);
        s.embedding_dim = 128;
        s.n_classes = 9;
        let net = Network::new(&vs.root(), &s).unwrap();
        let vars = vs.variables();
        assert_eq!(vars["body.conv0.weight"].size(), vec![64, 3, 2, 2]);
        assert_eq!(vars["body.conv3.weight"].size(), vec![512, 256, 2, 2]);
        assert_eq!(vars["body.dense.weight"].size(), vec![128, 512]);
        assert_eq!(vars["classifier.weight"].size(), vec![9, 128]);
        let windows = Tensor::zeros([2, 256, 256], (Kind::Uint8, Device::Cpu));
        let input = net.prepare_input(&windows);
        assert_eq!(input.size(), vec![2, 3, 256, 256]);
        let emb = net.embed(&input, false);
        assert_eq!(emb.size(), vec![2, 128]);
        assert_eq!(net.classify(&emb, false).unwrap().size(), vec![2, 9]);
    }

    #[test]
    fn seed_network_rejects_small_windows() {
        let err = spec(Architecture::Seed, Objective::Genre, 128, 256)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("256×256"), "{err}");
    }

    #[test]
    fn default_network_embeds_and_projects() {
        let vs = VarStore::new(Device::Cpu);
        let net = Network::new(
            &vs.root(),
            &spec(Architecture::Default, Objective::Contrastive, 32, 48),
        )
        .unwrap();
        let windows = Tensor::ones([3, 32, 48], (Kind::Uint8, Device::Cpu));
        let emb = net.embed(&net.prepare_input(&windows), true);
        assert_eq!(emb.size(), vec![3, 16]);
        assert!(net.classify(&emb, false).is_none());
        assert_eq!(net.project(&emb).unwrap().size(), vec![3, 8]);
    }

    #[test]
    fn genre_objective_needs_two_classes() {
        let mut s = spec(Architecture::Default, Objective::Genre, 32, 32);
        s.n_classes = 1;
        assert!(s.validate().is_err());
    }
}
