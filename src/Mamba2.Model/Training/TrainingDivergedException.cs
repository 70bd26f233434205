namespace Mamba2.Model.Training;

/// <summary>
/// A training run's numbers stopped being finite: a step's loss, or a weight or optimizer moment about to be saved,
/// is NaN or infinite (a learning rate too high, most often). <see cref="Trainer.Save"/> throws it rather than write
/// a checkpoint that could only reproduce the failure, so the checkpoints already on disk are the last good ones.
/// </summary>
public sealed class TrainingDivergedException(long step, string message) : Exception(message)
{
    /// <summary>The step whose numbers were not finite.</summary>
    public long Step { get; } = step;
}
