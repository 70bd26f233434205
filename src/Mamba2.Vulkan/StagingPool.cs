using Silk.NET.Vulkan;

namespace Mamba2.Vulkan;

/// <summary>
/// Moves data between the host and device-only memory through one reusable host-visible buffer, in pieces of at
/// most <see cref="ChunkBytes"/>, so uploads of any size need bounded staging memory.
/// </summary>
internal sealed unsafe class StagingPool : IDisposable
{
    private const ulong ChunkBytes = 32UL << 20;
    private readonly GpuDevice _device;
    private GpuBuffer? _up;
    private GpuBuffer? _down;

    public StagingPool(GpuDevice device) => _device = device;

    public void Upload(GpuBuffer target, ulong offset, ReadOnlySpan<byte> data)
    {
        var staging = _up ??= new GpuBuffer(_device, ChunkBytes, MemoryKind.Upload, "staging upload");
        for (ulong done = 0; done < (ulong)data.Length; done += ChunkBytes)
        {
            var n = Math.Min(ChunkBytes, (ulong)data.Length - done);
            data.Slice((int)done, (int)n).CopyTo(new Span<byte>(staging.Mapped, (int)n));
            using var s = _device.BeginStream();
            s.Copy(staging, 0, target, offset + done, n);
            s.Submit();
        }
    }

    public void Download(GpuBuffer source, ulong offset, Span<byte> data)
    {
        var staging = _down ??= new GpuBuffer(_device, ChunkBytes, MemoryKind.Readback, "staging download");
        for (ulong done = 0; done < (ulong)data.Length; done += ChunkBytes)
        {
            var n = Math.Min(ChunkBytes, (ulong)data.Length - done);
            using (var s = _device.BeginStream())
            {
                s.Copy(source, offset + done, staging, 0, n);
                s.Submit();
            }

            new ReadOnlySpan<byte>(staging.Mapped, (int)n).CopyTo(data.Slice((int)done, (int)n));
        }
    }

    public void Dispose()
    {
        _up?.Dispose();
        _down?.Dispose();
    }
}
