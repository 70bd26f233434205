using Mamba2.Model.Modules;
using Mamba2.Model.Tensors;

namespace Mamba2.Model.Training;

/// <summary>
/// Training steps on one device, one after another, as the <see cref="Trainer"/> takes them: each a layer a
/// submission (the host records the next while the device runs one), the AdamW step recorded into the backward's
/// last stage, and that stage left running when <see cref="Step"/> returns. The next step's first two stages are
/// launched behind it, and the step before is freed only once the first has run (a share after each stage), so the
/// device goes from one step to the next without waiting for the host's work between them (reading the loss,
/// drawing and uploading the next batch, recording the first stages, freeing the step before). The backward frees each block's activations once
/// its stage has run, so little more than the gradients is left of a step at that edge. The losses and weights are
/// the same, bit for bit, as with each step waited for.
/// </summary>
public sealed class TrainingSteps : IDisposable
{
    private readonly Mamba2LM _model;
    private readonly AdamW _optimizer;
    private readonly float? _maxGradNorm;
    private readonly long? _headBlockBytes;
    private readonly List<IDisposable> _running = [];   // the last step's, its last stage's recording first
    private bool _disposed;

    /// <param name="model">The model trained; its parameters are <paramref name="optimizer"/>'s.</param>
    /// <param name="optimizer">Steps after each backward, with gradients clipped to <paramref name="maxGradNorm"/> (none when null).</param>
    /// <param name="headBlockBytes">The LM head's row blocks (<see cref="Ops.LinearCrossEntropy.DefaultBlockBytes"/> when null).</param>
    public TrainingSteps(Mamba2LM model, AdamW optimizer, float? maxGradNorm, long? headBlockBytes = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(optimizer);
        AdamW.CheckMaxNorm(maxGradNorm);
        (_model, _optimizer, _maxGradNorm, _headBlockBytes) = (model, optimizer, maxGradNorm, headBlockBytes);
    }

    /// <summary>True while a step's last stage may still be running (until <see cref="Finish"/> or the next step's first stage).</summary>
    public bool Running => _running.Count > 0;

    /// <summary>
    /// One step on <paramref name="ids"/> against <paramref name="targets"/> (both (b, L), both taken over: freed once
    /// the step has run): its mean loss and each position's argmax, read once the forward has run. The optimizer's
    /// update may still be running on return; the device's later work is ordered after it, and a host read of a
    /// weight or moment waits for it (<see cref="Mamba2.Vulkan.GpuBuffer.Download{T}"/>). <see cref="Finish"/> waits
    /// and frees the step's tensors.
    /// </summary>
    public (float Loss, int[] Predictions) Step(IndexTensor ids, IndexTensor targets)
    {
        if (ids is null || targets is null)
        {
            ids?.Dispose();   // taken over either way
            targets?.Dispose();
            throw new ArgumentNullException(ids is null ? nameof(ids) : nameof(targets));
        }

        var held = new List<IDisposable> { ids, targets };
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            // Stage 0 done on the device means the step before is too (streams run in launch order): its tensors are
            // freed from then on, a share after each stage, while the device runs the next (freeing hundreds of
            // tensors at once cost the host more than a stage of the device's time).
            var acts = _model.ForwardLoss(ids, targets, predictions: true, _headBlockBytes, stageDone: _ => FreeSome(FreedAStage));
            held.Insert(0, acts);
            Finish();   // what the forward's stages left
            var listener = _optimizer.StepWhenFormed(_maxGradNorm);
            var grads = _model.Backward(acts, listener, out var lastStage);
            held.InsertRange(0, grads.Values);
            held.Insert(0, lastStage);   // disposed first: it waits for the stage that reads everything after it
            if (!listener.Stepped)
            {
                throw new InvalidOperationException("TrainingSteps: the backward formed not every parameter's gradient, so the optimizer did not step.");
            }

            // The head ran stages ago: neither buffer is read by the stage still running, so these do not wait for it.
            var loss = acts.Loss!.Loss.ToArray()[0];
            var predictions = acts.Loss.Predictions();
            _running.AddRange(held);
            held.Clear();
            return (loss, predictions);
        }
        finally
        {
            Free(held);
        }
    }

    private const int FreedAStage = 8;

    /// <summary>Frees the step before's first <paramref name="count"/> tensors (its last stage's recording first, which waits for it).</summary>
    private void FreeSome(int count)
    {
        var some = _running.Take(count).ToList();
        _running.RemoveRange(0, some.Count);
        Free(some);
    }

    /// <summary>Waits for the step still running, if any, and frees what it held.</summary>
    public void Finish() => FreeSome(_running.Count);

    private static void Free(List<IDisposable> items)
    {
        List<Exception>? errors = null;
        foreach (var d in items)
        {
            try
            {
                d.Dispose();
            }
            catch (Exception e)
            {
                (errors ??= []).Add(e);
            }
        }

        items.Clear();
        if (errors is not null)
        {
            throw errors.Count == 1 ? errors[0] : new AggregateException(errors);
        }
    }

    /// <summary>Waits for the step still running and frees it; the model and optimizer stay the caller's.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        Finish();
    }
}
