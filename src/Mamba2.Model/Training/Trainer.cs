using System.Numerics;
using System.Runtime.InteropServices;
using System.Text.Json;
using Mamba2.Model.Checkpoints;
using Mamba2.Model.Distributed;
using Mamba2.Model.IO;
using Mamba2.Model.Modules;
using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Model.Training.Tasks;
using Mamba2.Vulkan;

namespace Mamba2.Model.Training;

/// <summary>How a run trains: batch size, steps, AdamW and its schedule, clipping, the data seed.</summary>
public sealed record TrainerOptions
{
    public int Batch { get; init; } = 16;

    public long Steps { get; init; } = 1000;

    public float LearningRate { get; init; } = 3e-3f;

    public int WarmupSteps { get; init; } = 50;

    public float WeightDecay { get; init; } = 0.1f;

    public float MaxGradNorm { get; init; } = 1f;

    public int Seed { get; init; }

    public int EvalBatches { get; init; } = 4;
}

/// <summary>Loss and, for synthetic tasks, the accuracy over scored positions (argmax).</summary>
public sealed record StepMetrics(long Step, double Loss, double Accuracy, float LearningRate);

/// <summary>
/// The training loop: a batch of the task per step (generated from the seed and the step index, so a resumed run
/// sees the same data), forward, cross-entropy, backward, AdamW with gradient clipping and a warm-up + cosine
/// schedule. Every kernel is deterministic, so the same seed and device give the same losses, resumed or not.
/// With a <see cref="Communicator"/> of several ranks it trains data parallel: every rank draws the same global
/// batch of <see cref="TrainerOptions.Batch"/> rows, runs its share of the rows (<see cref="DataParallel"/>), and
/// the gradients are summed over the ranks before the (identical) optimizer step, so all ranks keep equal weights.
/// </summary>
public sealed class Trainer : IDisposable
{
    public const string OptimizerFile = "optimizer.safetensors";
    public const string StateFile = "trainer.json";

    private readonly AdamW _optimizer;
    private readonly LearningRateSchedule _schedule;
    private readonly List<(string Name, Tensor Value)> _params;

    /// <summary>
    /// A trainer owning <paramref name="model"/> (it disposes it, also when this constructor throws), alone or as one
    /// rank of <paramref name="communicator"/>'s job.
    /// </summary>
    public Trainer(Mamba2LM model, TrainingTask task, TrainerOptions options, Communicator? communicator = null)
    {
        try
        {
            if (model.Config.VocabSize < task.VocabSize)
            {
                throw new ArgumentException($"Trainer: the task needs a vocabulary of {task.VocabSize}, the model has {model.Config.VocabSize}.", nameof(model));
            }

            Communicator = communicator ?? Communicator.Alone;
            if (options.Batch < Communicator.Size)
            {
                throw new ArgumentException($"Trainer: a global batch of {options.Batch} cannot give each of {Communicator.Size} ranks a row.", nameof(options));
            }

            Model = model;
            Task = task;
            Options = options;
            _params = [.. model.Parameters];
            _optimizer = new AdamW([.. _params.Select(p => new OptimizerParameter(p.Name, p.Value, Decays(p.Name)))], options.LearningRate,
                weightDecay: options.WeightDecay);
            _schedule = new LearningRateSchedule(options.LearningRate, options.WarmupSteps, (int)Math.Min(int.MaxValue, options.Steps), options.LearningRate / 10);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    public Mamba2LM Model { get; }

    public TrainingTask Task { get; }

    public TrainerOptions Options { get; }

    /// <summary>The job this trainer is a rank of (<see cref="Communicator.Alone"/> when it trains alone).</summary>
    public Communicator Communicator { get; }

    /// <summary>Time the gradient sums over the ranks took (host copies and MPI), overlapped with the backward or not.</summary>
    public double GradientSumSeconds { get; private set; }

    /// <summary>Of that, the time the steps waited for it after their backward (the part not hidden), with the copy back.</summary>
    public double GradientWaitSeconds { get; private set; }

    /// <summary>How the gradients are summed over the ranks (<see cref="GradientExchange.SumPath"/>), once a step has run on several.</summary>
    public string? GradientSumPath => _exchange?.SumPath;

    private GradientExchange? _exchange;

    private TrainingSteps? _steps;   // one rank's steps, each left running into the next

    /// <summary>Steps taken (the next batch's index).</summary>
    public long Step { get; private set; }

    /// <summary>No weight decay on A_log, D, dt_bias, norms and biases (mamba_ssm).</summary>
    public static bool Decays(string name) =>
        !(name.EndsWith(".A_log", StringComparison.Ordinal) || name.EndsWith(".D", StringComparison.Ordinal) || name.EndsWith(".dt_bias", StringComparison.Ordinal)
          || name.Contains("norm", StringComparison.Ordinal) || name.EndsWith(".bias", StringComparison.Ordinal));

    /// <summary>One optimizer step on batch <see cref="Step"/>.</summary>
    public StepMetrics TrainStep()
    {
        var lr = _schedule.At(Step);
        _optimizer.LearningRate = lr;
        var batch = Task.Batch(Options.Batch, Step, Options.Seed);
        var device = Model.Embeddings.Device;
        var (loss, accuracy) = Run(batch, device, train: true);
        Step++;
        return new StepMetrics(Step, loss, accuracy, lr);
    }

    /// <summary>Mean loss and accuracy over the fixed evaluation batches (their own seed stream).</summary>
    public StepMetrics Evaluate()
    {
        var device = Model.Embeddings.Device;
        double loss = 0, accuracy = 0;
        for (var i = 0; i < Options.EvalBatches; i++)
        {
            var (l, a) = Run(Task.Batch(Options.Batch, i, Options.Seed ^ 0x5EED5EED), device, train: false);
            loss += l;
            accuracy += a;
        }

        return new StepMetrics(Step, loss / Options.EvalBatches, accuracy / Options.EvalBatches, _optimizer.LearningRate);
    }

    /// <summary>The global batch's loss and accuracy; with <paramref name="train"/>, an optimizer step on its gradient.</summary>
    private (double Loss, double Accuracy) Run(TaskBatch global, GpuDevice device, bool train)
    {
        var comm = Communicator;
        var (start, rows) = DataParallel.Rows(global.Batch, comm.Rank, comm.Size);
        var batch = comm.Size == 1 ? global : DataParallel.Slice(global, start, rows);
        if (train && comm.Size == 1)
        {
            // The step's last stage (the optimizer's) runs on while the host reads the loss and makes the next batch.
            _steps ??= new TrainingSteps(Model, _optimizer, Options.MaxGradNorm);
            var stepIds = IndexTensor.FromArray(device, "input_ids", batch.Inputs, batch.Batch, batch.SeqLen);
            IndexTensor stepTargets;
            try
            {
                stepTargets = IndexTensor.FromArray(device, "targets", batch.Targets, batch.Batch, batch.SeqLen);
            }
            catch
            {
                stepIds.Dispose();
                throw;
            }

            var (stepLoss, predicted) = _steps.Step(stepIds, stepTargets);
            var scoredHere = DataParallel.Scored(batch.Targets);
            return (stepLoss, scoredHere == 0 ? 0 : (double)Right(predicted, batch.Targets) / scoredHere);
        }

        _steps?.Finish();
        using var ids = IndexTensor.FromArray(device, "input_ids", batch.Inputs, batch.Batch, batch.SeqLen);
        using var targets = IndexTensor.FromArray(device, "targets", batch.Targets, batch.Batch, batch.SeqLen);
        // The head and the loss in row blocks (no whole logits); a training step forms the head's gradients there too.
        using var acts = Model.ForwardLoss(ids, targets, gradients: train, predictions: true);
        var scored = DataParallel.Scored(batch.Targets);
        var share = 1.0;   // this rank's part of the global batch's scored targets
        var globalScored = scored;
        if (comm.Size > 1)
        {
            globalScored = DataParallel.Scored(global.Targets);
            share = globalScored == 0 ? 0 : (double)scored / globalScored;
        }

        // The loss and predictions are read after the backward is recorded: reading them first would wait for the
        // forward's last stage, which the backward's first stage is recorded beside.
        if (train)
        {
            // Several ranks (one trains through TrainingSteps above): the gradients are summed over them stage by
            // stage as the backward runs; what is left waits here.
            _exchange ??= new GradientExchange(comm, _params, lookupOf: Mamba2LM.EmbeddingsName);
            _exchange.Begin((float)share, batch.Inputs);
            var grads = Model.Backward(acts, _exchange);
            try
            {
                var clock = System.Diagnostics.Stopwatch.StartNew();
                _exchange.Finish(grads);
                GradientWaitSeconds += clock.Elapsed.TotalSeconds;
                GradientSumSeconds += _exchange.SumSeconds;
                _optimizer.Step([.. _params.Select(p => grads[p.Name])], Options.MaxGradNorm);
            }
            finally
            {
                foreach (var g in grads.Values)
                {
                    g.Dispose();
                }
            }
        }

        double loss = acts.Loss!.Loss.ToArray()[0];
        var right = Right(acts.Loss.Predictions(), batch.Targets);
        if (comm.Size > 1)
        {
            double[] sums = [scored == 0 ? 0 : loss * share, right, scored];   // a rank with nothing scored adds nothing
            comm.SumInPlace(sums);
            loss = globalScored == 0 ? double.NaN : sums[0];
            (right, scored) = ((int)sums[1], (int)sums[2]);
        }

        return (loss, scored == 0 ? 0 : (double)right / scored);
    }

    /// <summary>Scored targets predicted right.</summary>
    private static int Right(int[] predicted, int[] targets)
    {
        var right = 0;
        for (var r = 0; r < targets.Length; r++)
        {
            right += targets[r] != TrainingTask.Ignore && predicted[r] == targets[r] ? 1 : 0;
        }

        return right;
    }

    /// <summary>
    /// The model (HF layout), the optimizer's moments and the step into <paramref name="directory"/>, with copies of
    /// the files <paramref name="alongside"/> (a tokenizer's), atomically: written beside it, then renamed into place.
    /// A weight or moment that is NaN or infinite throws <see cref="TrainingDivergedException"/> and nothing is written.
    /// </summary>
    public void Save(string directory, IEnumerable<string>? alongside = null)
    {
        _steps?.Finish();   // the last step's update is in the weights and moments read below
        var weights = Model.Parameters.Select(q => (q.Name, Values: q.Value.ToArray())).ToList();
        var moments = new List<(string Name, float[] Values, int[] Shape)>();
        for (var i = 0; i < _params.Count; i++)
        {
            var (m, v) = _optimizer.State(i);
            moments.Add((_params[i].Name + ".exp_avg", m.ToArray(), [.. m.Shape]));
            moments.Add((_params[i].Name + ".exp_avg_sq", v.ToArray(), [.. v.Shape]));
        }

        // Checked before anything is written: a diverged run's checkpoint would replace good ones as the run rotates them.
        foreach (var (name, values) in weights.Concat(moments.Select(m => (m.Name, m.Values))))
        {
            if (FirstNonFinite(values) is { } at)
            {
                throw new TrainingDivergedException(Step,
                    $"step {Step}: {name}[{at}] is {values[at].ToString(System.Globalization.CultureInfo.InvariantCulture)}: the run diverged, so its checkpoint was not saved (a lower learning rate may help).");
            }
        }

        DurableFiles.WriteDirectory(directory, temp =>
        {
            Mamba2Checkpoint.Write(Model.Config, weights.ToDictionary(w => w.Name, w => w.Values), temp);
            foreach (var file in alongside ?? [])
            {
                File.Copy(file, Path.Combine(temp, Path.GetFileName(file)));   // a tokenizer's files: the checkpoint is a whole model
            }

            SafetensorsWriter.Write(Path.Combine(temp, OptimizerFile), [.. moments.Select(m => HostTensor.FromFloat32(m.Name, m.Values, m.Shape))]);
            DurableFiles.WriteAllText(Path.Combine(temp, StateFile), JsonSerializer.Serialize(new SavedState(Step, _optimizer.StepCount, Task.Name, Options, Model.Precision.Name(), Model.StoreActivationsAsBf16)));
        });
    }

    /// <summary>The index of the first NaN or infinity in <paramref name="values"/>, or null.</summary>
    internal static int? FirstNonFinite(ReadOnlySpan<float> values)
    {
        // v - v is 0 for finite v and NaN otherwise: whole vectors first (a large model's saves scan 3 x its weights).
        var start = 0;
        var vectors = MemoryMarshal.Cast<float, Vector<float>>(values);
        while (start < vectors.Length && Vector.EqualsAll(vectors[start] - vectors[start], Vector<float>.Zero))
        {
            start++;
        }

        for (var i = start * Vector<float>.Count; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i]))
            {
                return i;
            }
        }

        return null;
    }

    /// <summary>
    /// Removes what interrupted <see cref="Save"/>s into <paramref name="runDirectory"/> left behind: half-written
    /// "step-N.tmp-*" folders and "step-N.old-*" ones a crash kept beside their replacement. Returns how many.
    /// </summary>
    public static int CleanInterruptedSaves(string runDirectory)
    {
        var stale = Directory.Exists(runDirectory)
            ? Directory.GetDirectories(runDirectory, "step-*.tmp-*").Concat(Directory.GetDirectories(runDirectory, "step-*.old-*")).ToList()
            : [];
        foreach (var dir in stale)
        {
            Directory.Delete(dir, recursive: true);
        }

        return stale.Count;
    }

    /// <summary>The step a checkpoint directory (Save's layout) was saved at, from its trainer state.</summary>
    public static long StepOf(string directory) => ReadState(directory).Step;

    private static SavedState ReadState(string directory)
    {
        var statePath = Path.Combine(directory, StateFile);
        if (!File.Exists(statePath))
        {
            throw new FileNotFoundException($"{directory} is not a checkpoint of a run: it has no {StateFile}.", statePath);
        }

        try
        {
            return JsonSerializer.Deserialize<SavedState>(File.ReadAllText(statePath))
                ?? throw new InvalidDataException($"{statePath}: empty.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{statePath}: corrupt ({e.Message})", e);
        }
    }

    /// <summary>
    /// A trainer continuing from <paramref name="directory"/> (Save's layout): same model, moments and step, and the
    /// model computing as it did (its precision and bf16 activations) unless <paramref name="precision"/> says
    /// otherwise (bf16 activations are kept in bf16 only). A saved mode this device cannot run throws
    /// <see cref="MissingFeatureException"/>: pass the mode to go on in. Checkpoints saved before the mode was
    /// recorded resume in exact fp32.
    /// </summary>
    public static Trainer Resume(GpuDevice device, string directory, TrainingTask task, TrainerOptions options, Communicator? communicator = null,
        Precision? precision = null)
    {
        var state = ReadState(directory);
        if (state.Task != task.Name)
        {
            throw new ArgumentException($"{directory} was trained on {state.Task}, not {task.Name}.", nameof(task));
        }

        var saved = Precision.Fp32;
        if (state.Precision is { } name && !PrecisionPolicy.TryParse(name, out saved))
        {
            throw new InvalidDataException($"{Path.Combine(directory, StateFile)}: precision '{name}' is not fp32, fp32-fast or bf16.");
        }

        var mode = precision ?? saved;
        if (precision is null && PrecisionPolicy.WhyNot(device, mode) is { } why)
        {
            throw new MissingFeatureException($"{directory} was trained in {mode.Name()}: {why}; pass the precision to go on in.");
        }

        var trainer = new Trainer(Mamba2Checkpoint.Load(device, directory), task, options, communicator);
        try
        {
            trainer.Model.Precision = mode;
            trainer.Model.StoreActivationsAsBf16 = state.Bf16Activations && mode == Precision.Bf16;
            using var file = SafetensorsFile.Open(Path.Combine(directory, OptimizerFile));
            for (var i = 0; i < trainer._params.Count; i++)
            {
                var (m, v) = trainer._optimizer.State(i);
                m.CopyFrom(file.Read(trainer._params[i].Name + ".exp_avg").ToFloat32());
                v.CopyFrom(file.Read(trainer._params[i].Name + ".exp_avg_sq").ToFloat32());
            }

            trainer._optimizer.Restore(state.OptimizerSteps);
            trainer.Step = state.Step;
            return trainer;
        }
        catch
        {
            trainer.Dispose();
            throw;
        }
    }

    private sealed record SavedState(long Step, long OptimizerSteps, string Task, TrainerOptions Options, string? Precision = null, bool Bf16Activations = false);

    /// <summary>Frees the optimizer state and the model.</summary>
    public void Dispose()
    {
        _steps?.Dispose();   // waits for the last step before its tensors and the model are freed
        _exchange?.Dispose();
        _optimizer.Dispose();
        Model.Dispose();
    }
}
