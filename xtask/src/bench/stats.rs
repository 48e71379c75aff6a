//! Statistics over a benchmark's samples: medians, spreads, and bootstrap confidence intervals
//! for the ratios and differences the targets judge.

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The samples' range (max - min) relative to their median.
pub fn relative_range(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    (max - min) / median(values)
}

/// A 95% confidence interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// Resamples per interval: the 2.5th and 97.5th percentiles then move by well under a
/// percent of the interval's width from one seed to another.
const RESAMPLES: usize = 4000;
/// Fixed, so that a report computed twice from the same samples says the same.
const SEED: u64 = 0x686f_7374_6e65_7464;
/// Fewer samples than this give no interval: two rounds resample to three distinct medians.
pub const MIN_SAMPLES: usize = 3;

/// The 95% percentile-bootstrap interval of `combine(median(a), median(b))`: each resample
/// draws the samples with replacement and recomputes both medians. Paired (the same draws of
/// round indices for both) when `a` and `b` were measured round by round side by side, so
/// that what a round's machine load did to both stays together; else each is resampled on
/// its own. None with too few samples.
pub fn bootstrap(
    a: &[f64],
    b: &[f64],
    paired: bool,
    combine: impl Fn(f64, f64) -> f64,
) -> Option<Interval> {
    if a.len() < MIN_SAMPLES || b.len() < MIN_SAMPLES || (paired && a.len() != b.len()) {
        return None;
    }
    let mut rng = SplitMix64(SEED);
    let mut resample = |values: &[f64], rounds: &mut Vec<usize>, fresh: bool| -> Vec<f64> {
        if fresh {
            rounds.clear();
            rounds.extend((0..values.len()).map(|_| rng.below(values.len())));
        }
        rounds.iter().map(|&round| values[round]).collect()
    };
    let mut rounds = Vec::with_capacity(a.len().max(b.len()));
    let mut statistics: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            let drawn_a = resample(a, &mut rounds, true);
            // Paired: b at the very rounds drawn for a.
            let drawn_b = resample(b, &mut rounds, !paired);
            combine(median(&drawn_a), median(&drawn_b))
        })
        .collect();
    statistics.sort_by(f64::total_cmp);
    Some(Interval {
        low: quantile(&statistics, 0.025),
        high: quantile(&statistics, 0.975),
    })
}

/// The interval of median(a) / median(b).
pub fn ratio_interval(a: &[f64], b: &[f64], paired: bool) -> Option<Interval> {
    bootstrap(a, b, paired, |x, y| x / y)
}

/// The interval of median(a) - median(b).
pub fn difference_interval(a: &[f64], b: &[f64], paired: bool) -> Option<Interval> {
    bootstrap(a, b, paired, |x, y| x - y)
}

/// Linear interpolation between the closest ranks of sorted `values`.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let (below, above) = (position.floor() as usize, position.ceil() as usize);
    let weight = position - below as f64;
    sorted[below] * (1.0 - weight) + sorted[above] * weight
}

/// SplitMix64 (Steele, Lea and Flood): small, fast, and good enough to draw indices.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n is a handful of rounds: the modulo bias is negligible).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Which side of its threshold a target wants the figure on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    AtMost,
    AtLeast,
}

/// A target's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// The interval straddles the threshold: this run cannot tell.
    NotResolved,
    /// Nothing to judge (not measured, or no such program attached).
    NotApplicable,
}

impl Verdict {
    /// The interval wholly on the wanted side of `threshold` is met, wholly on the other side
    /// missed, across it not resolved.
    pub fn judge(interval: Interval, threshold: f64, want: Want) -> Self {
        let (good, bad) = match want {
            Want::AtMost => (interval.high <= threshold, interval.low > threshold),
            Want::AtLeast => (interval.low >= threshold, interval.high < threshold),
        };
        match (good, bad) {
            (true, _) => Self::Met,
            (_, true) => Self::Missed,
            _ => Self::NotResolved,
        }
    }

    /// Several parts that must all be met: any missed misses, else any unresolved leaves the
    /// whole unresolved.
    pub fn all(verdicts: impl IntoIterator<Item = Self>) -> Self {
        let verdicts: Vec<Self> = verdicts
            .into_iter()
            .filter(|v| *v != Self::NotApplicable)
            .collect();
        if verdicts.is_empty() {
            Self::NotApplicable
        } else if verdicts.contains(&Self::Missed) {
            Self::Missed
        } else if verdicts.contains(&Self::NotResolved) {
            Self::NotResolved
        } else {
            Self::Met
        }
    }

    /// Met or missed by a figure that has no interval.
    pub fn from_met(met: bool) -> Self {
        if met {
            Self::Met
        } else {
            Self::Missed
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::Missed => "**missed**",
            Self::NotResolved => "not resolved",
            Self::NotApplicable => "n/a",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(relative_range(&[9.0, 10.0, 11.0]), 0.2);
    }

    /// Noise the tests can reproduce: uniform in [-1, 1).
    fn noise(rng: &mut SplitMix64) -> f64 {
        (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    #[test]
    fn the_median_of_1_to_100_is_known_to_within_its_standard_error() {
        // The median of n samples of a distribution of density f at its median has a standard
        // error of 1 / (2 f sqrt(n)): uniform over 100 values, f = 0.01, n = 100, 5.0; a 95%
        // interval of 50.5 +- 1.96 * 5.0 = 40.7 to 60.3.
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let ones = vec![1.0; 100];
        let interval = ratio_interval(&values, &ones, true).unwrap();
        assert!((interval.low - 40.7).abs() < 1.5, "{interval:?}");
        assert!((interval.high - 60.3).abs() < 1.5, "{interval:?}");
        // The same figure twice: the seed is fixed.
        assert_eq!(ratio_interval(&values, &ones, true), Some(interval));
    }

    #[test]
    fn identical_rounds_give_a_point() {
        let interval = difference_interval(&[5.0; 8], &[2.0; 8], false).unwrap();
        assert_eq!(
            interval,
            Interval {
                low: 3.0,
                high: 3.0
            }
        );
    }

    #[test]
    fn a_clear_difference_resolves_and_noise_does_not() {
        let mut rng = SplitMix64(7);
        let slow: Vec<f64> = (0..10).map(|_| 110.0 + noise(&mut rng)).collect();
        let fast: Vec<f64> = (0..10).map(|_| 100.0 + noise(&mut rng)).collect();
        let clear = ratio_interval(&slow, &fast, true).unwrap();
        assert!(clear.low > 1.07 && clear.high < 1.13, "{clear:?}");
        assert_eq!(Verdict::judge(clear, 1.03, Want::AtMost), Verdict::Missed);
        assert_eq!(Verdict::judge(clear, 1.15, Want::AtMost), Verdict::Met);

        let a: Vec<f64> = (0..10).map(|_| 100.0 + 10.0 * noise(&mut rng)).collect();
        let b: Vec<f64> = (0..10).map(|_| 100.0 + 10.0 * noise(&mut rng)).collect();
        let noisy = ratio_interval(&a, &b, true).unwrap();
        assert!(noisy.low < 1.0 && noisy.high > 1.0, "{noisy:?}");
        assert_eq!(
            Verdict::judge(noisy, 1.0, Want::AtMost),
            Verdict::NotResolved
        );
        assert_eq!(
            Verdict::judge(noisy, 1.0, Want::AtLeast),
            Verdict::NotResolved
        );
    }

    #[test]
    fn pairing_by_round_cancels_what_rounds_share() {
        // Each round's load moves both configurations alike (by up to 30%); b is 5% faster.
        let mut rng = SplitMix64(11);
        let load: Vec<f64> = (0..10).map(|_| 1.0 + 0.3 * noise(&mut rng)).collect();
        let a: Vec<f64> = load.iter().map(|l| 105.0 * l).collect();
        let b: Vec<f64> = load.iter().map(|l| 100.0 * l).collect();
        let paired = ratio_interval(&a, &b, true).unwrap();
        let unpaired = ratio_interval(&a, &b, false).unwrap();
        assert!((paired.low - 1.05).abs() < 1e-9 && (paired.high - 1.05).abs() < 1e-9);
        assert!(unpaired.high - unpaired.low > 0.1, "{unpaired:?}");
        assert_eq!(Verdict::judge(paired, 1.03, Want::AtMost), Verdict::Missed);
        assert_eq!(
            Verdict::judge(unpaired, 1.03, Want::AtMost),
            Verdict::NotResolved
        );
    }

    #[test]
    fn too_few_rounds_give_no_interval() {
        assert_eq!(ratio_interval(&[1.0, 2.0], &[1.0, 2.0], true), None);
        assert_eq!(ratio_interval(&[1.0, 2.0, 3.0], &[1.0, 2.0], true), None);
        assert!(ratio_interval(&[1.0, 2.0, 3.0], &[1.0, 2.0, 4.0, 5.0], false).is_some());
    }

    #[test]
    fn verdicts_combine() {
        use Verdict::*;
        assert_eq!(Verdict::all([Met, NotResolved, Met]), NotResolved);
        assert_eq!(Verdict::all([Met, NotResolved, Missed]), Missed);
        assert_eq!(Verdict::all([Met, NotApplicable]), Met);
        assert_eq!(Verdict::all([]), NotApplicable);
    }
}
