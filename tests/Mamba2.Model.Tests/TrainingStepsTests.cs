using Mamba2.Model.Modules;
using Mamba2.Model.Tensors;
using Mamba2.Model.Training;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

public class TrainingStepsTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    private static readonly Mamba2LMConfig Config = new(VocabSize: 13, NLayer: 2, new Mamba2Config(DModel: 16) { DState = 8, HeadDim = 8, ChunkSize = 16 });

    private static AdamW Optimizer(Mamba2LM lm) =>
        new([.. lm.Parameters.Select(p => new OptimizerParameter(p.Name, p.Value, Trainer.Decays(p.Name)))], lr: 1e-2f, weightDecay: 0.1f);

    private IndexTensor Ids(int[] values) => IndexTensor.FromArray(Device, "input_ids", values, 2, 21);

    [Fact]
    public void StepsLeftRunningIntoTheNextAreTheStepsWaitedFor()
    {
        // Each step's last stage runs on while the next step's batch is uploaded and its first stage launched: the
        // losses, predictions and weights are those of steps waited for one by one, bit for bit.
        var seed = TestMath.NewSeed();
        var rng = new Random(seed + 1);
        var batches = Enumerable.Range(0, 3).Select(_ => Enumerable.Range(0, 2 * 21).Select(_ => rng.Next(Config.VocabSize)).ToArray()).ToList();
        using var waited = Mamba2LM.Initialize(Device, Config, new Random(seed));
        using var overlapped = Mamba2LM.Initialize(Device, Config, new Random(seed));
        using var optWaited = Optimizer(waited);
        using var optOverlapped = Optimizer(overlapped);
        long before;
        using (var steps = new TrainingSteps(overlapped, optOverlapped, maxGradNorm: 0.5f))
        {
            foreach (var (batch, step) in batches.Select((v, i) => (v, i)))
            {
                float expectedLoss;
                int[] expectedPredictions;
                using (var ids = Ids(batch))
                using (var targets = Mamba2LM.NextTokenTargets(ids))
                using (var acts = waited.ForwardLoss(ids, targets, predictions: true))
                {
                    var listener = optWaited.StepWhenFormed(0.5f);
                    var g = waited.Backward(acts, listener);
                    g.Values.ToList().ForEach(t => t.Dispose());
                    Assert.True(listener.Stepped);
                    expectedLoss = acts.Loss!.Loss.ToArray()[0];
                    expectedPredictions = acts.Loss.Predictions();
                }

                var stepIds = Ids(batch);
                var (loss, predictions) = steps.Step(stepIds, Mamba2LM.NextTokenTargets(stepIds));
                Assert.True(steps.Running);
                Assert.Equal(expectedLoss, loss);
                Assert.Equal(expectedPredictions, predictions);
                Assert.Equal(step + 1, optOverlapped.StepCount);
            }

            steps.Finish();
            Assert.False(steps.Running);
            foreach (var ((name, a), (_, o)) in waited.Parameters.Zip(overlapped.Parameters))
            {
                Assert.True(a.ToArray().SequenceEqual(o.ToArray()), $"seed {seed}: {name} differs after 3 steps");
            }

            // (After the reads above: a device without unified memory keeps a staging buffer for them.)
            before = (long)Device.Memory.AllocatedBytes;

            // A step refused before any work: nothing of it is left, and the steps go on.
            var wrong = Ids(batches[0]);
            var before2 = Device.Memory.AllocatedBytes;
            var e = Assert.Throws<ArgumentException>(() => steps.Step(wrong, IndexTensor.FromArray(Device, "targets", new int[2 * 20], 2, 20)));
            Assert.Contains("targets", e.Message);
            Assert.True(wrong.Buffer.IsDisposed);   // taken over, and freed with the refused step
            Assert.True(Device.Memory.AllocatedBytes < before2);
            var again = Ids(batches[1]);
            Assert.True(float.IsFinite(steps.Step(again, Mamba2LM.NextTokenTargets(again)).Loss));
        }

        // Disposing waited for the last step and freed everything it held.
        Assert.Equal(before, (long)Device.Memory.AllocatedBytes);

        // Tensors given to a disposed one, or beside a null, are freed all the same.
        var late = Ids(batches[2]);
        var lateTargets = Mamba2LM.NextTokenTargets(late);
        var disposed = new TrainingSteps(overlapped, optOverlapped, maxGradNorm: null);
        disposed.Dispose();
        Assert.Throws<ObjectDisposedException>(() => disposed.Step(late, lateTargets));
        var lone = Ids(batches[2]);
        Assert.Equal("targets", Assert.Throws<ArgumentNullException>(() => disposed.Step(lone, null!)).ParamName);
        Assert.Equal(before, (long)Device.Memory.AllocatedBytes);
    }
}
