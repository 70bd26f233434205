namespace Mamba2.Model.Training;

/// <summary>Linear warm-up from 0 to the peak, then a cosine decay to the floor at the last step (then held).</summary>
public sealed record LearningRateSchedule(float Peak, int WarmupSteps, int TotalSteps, float Floor = 0f)
{
    /// <summary>The rate for 0-based <paramref name="step"/>.</summary>
    public float At(long step)
    {
        if (step < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(step), step, "step must be >= 0.");
        }

        if (step < WarmupSteps)
        {
            return Peak * (step + 1) / WarmupSteps;
        }

        var decay = Math.Max(1, TotalSteps - WarmupSteps);
        var progress = Math.Min(1.0, (double)(step - WarmupSteps) / decay);
        return (float)(Floor + (Peak - Floor) * 0.5 * (1 + Math.Cos(Math.PI * progress)));
    }
}
