using Mamba2.Tests;
using Silk.NET.Vulkan;
using Xunit;

namespace Mamba2.Vulkan.Tests;

/// <summary>
/// A block's suballocation against a model of its bytes: first fit, aligned, never overlapping, frees coalesced, and
/// <see cref="MemoryBlock.LargestFree"/> (which lets the allocator skip blocks) always the longest free range.
/// </summary>
public class MemoryBlockTests
{
    [Fact]
    public unsafe void TakesFirstFitAndKeepsTheLargestFreeRangeTrue()
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        const ulong size = 4096;
        var block = new MemoryBlock(default(DeviceMemory), 0, size, null, dedicated: false);
        var used = new bool[size];
        var live = new List<(ulong Offset, ulong Size)>();
        for (var step = 0; step < 5000; step++)
        {
            var what = $"seed {seed} step {step}";
            if (live.Count > 0 && rng.Next(3) == 0)
            {
                var (offset, length) = live[rng.Next(live.Count)];
                live.Remove((offset, length));
                block.Give(offset, length);
                Array.Fill(used, false, (int)offset, (int)length);
            }
            else
            {
                var want = (ulong)rng.Next(1, 300);
                var alignment = 1UL << rng.Next(0, 7);
                var expected = FirstFit(used, want, alignment);
                Assert.Equal(expected is not null, block.TryTake(want, alignment, out var offset));
                if (expected is not null)
                {
                    Assert.True(expected == offset, $"{what}: took {offset}, first fit is {expected}");
                    Assert.All(used.AsSpan((int)offset, (int)want).ToArray(), u => Assert.False(u, $"{what}: overlap"));
                    Array.Fill(used, true, (int)offset, (int)want);
                    live.Add((offset, want));
                }
            }

            Assert.True(LongestRun(used) == block.LargestFree, $"{what}: largest free {block.LargestFree}, expected {LongestRun(used)}");
            Assert.Equal(live.Count == 0, block.IsEmpty);
        }
    }

    private static ulong? FirstFit(bool[] used, ulong size, ulong alignment)
    {
        for (ulong start = 0; start + size <= (ulong)used.Length; start += alignment)
        {
            if (!used.AsSpan((int)start, (int)size).Contains(true))
            {
                return start;
            }
        }

        return null;
    }

    private static ulong LongestRun(bool[] used)
    {
        ulong best = 0, run = 0;
        foreach (var u in used)
        {
            run = u ? 0 : run + 1;
            best = Math.Max(best, run);
        }

        return best;
    }
}
