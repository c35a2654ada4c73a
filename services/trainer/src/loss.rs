//! The two training losses.

use tch::{Kind, Tensor};

/// Cross-entropy of genre logits `[B, C]` against class indices `[B]`; also
/// returns the number of correct argmax predictions.
pub fn genre_loss(logits: &Tensor, labels: &Tensor) -> (Tensor, i64) {
    let loss = logits.to_kind(Kind::Float).cross_entropy_for_logits(labels);
    let correct = logits
        .argmax(1, false)
        .eq_tensor(labels)
        .sum(Kind::Int64)
        .int64_value(&[]);
    (loss, correct)
}

/// NT-Xent (InfoNCE) over `2N` projections, where row `i` and row `i + N` are
/// two windows of one track. `tracks` gives each row's track so that other
/// pairs of the same track in the batch are not counted as negatives. Returns
/// the loss and how many rows found their partner as their nearest neighbour.
pub fn nt_xent(projections: &Tensor, tracks: &Tensor, temperature: f64) -> (Tensor, i64) {
    let rows = projections.size()[0];
    let n = rows / 2;
    let device = projections.device();
    let z = projections.to_kind(Kind::Float);
    let z = &z / z.norm_scalaropt_dim(2, [1], true).clamp_min(1e-8);
    let sim = z.mm(&z.transpose(0, 1)) / temperature;
    let idx = Tensor::arange(rows, (Kind::Int64, device));
    let partner = (&idx + n).remainder(rows);
    let same_track = tracks.unsqueeze(1).eq_tensor(&tracks.unsqueeze(0));
    let is_partner = partner.one_hot(rows).to_kind(Kind::Bool);
    // Masking the diagonal and same-track rows leaves the partner as the one positive.
    let excluded = same_track.logical_and(&is_partner.logical_not());
    let logits = sim.masked_fill(&excluded, -1e9);
    let loss = logits.cross_entropy_for_logits(&partner);
    let correct = logits
        .argmax(1, false)
        .eq_tensor(&partner)
        .sum(Kind::Int64)
        .int64_value(&[]);
    (loss, correct)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn nt_xent_is_low_for_aligned_pairs_and_high_for_swapped_ones() {
        let a = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0, -1.0, 0.0]).view([3, 2]);
        let tracks = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2]);
        let aligned = Tensor::cat(&[&a, &a], 0);
        let (good, correct) = nt_xent(&aligned, &tracks, 0.1);
        assert_eq!(correct, 6);
        let shuffled = Tensor::cat(&[&a, &a.roll([1], [0])], 0);
        let (bad, _) = nt_xent(&shuffled, &tracks, 0.1);
        assert!(good.double_value(&[]) < 0.01, "{good}");
        assert!(bad.double_value(&[]) > 1.0, "{bad}");
    }

    #[test]
    fn nt_xent_ignores_a_second_pair_of_the_same_track() {
        // Rows 0 and 1 are both track 7: row 1 must not act as a negative for row 0.
        let z = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]).view([4, 2]);
        let tracks = Tensor::from_slice(&[7i64, 7, 7, 7]);
        let (loss, _) = nt_xent(&z, &tracks, 0.5);
        assert!(loss.double_value(&[]).abs() < 1e-5, "{loss}");
    }

    #[test]
    fn genre_loss_counts_correct_predictions() {
        let logits = Tensor::from_slice(&[5.0f32, 0.0, 0.0, 5.0]).view([2, 2]);
        let labels = Tensor::from_slice(&[0i64, 0]).to_device(Device::Cpu);
        let (loss, correct) = genre_loss(&logits, &labels);
        assert_eq!(correct, 1);
        assert!(loss.double_value(&[]) > 2.0);
    }
}
