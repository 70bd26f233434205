using System.Runtime.CompilerServices;
using Silk.NET.Vulkan;
using VkBuffer = Silk.NET.Vulkan.Buffer;

namespace Mamba2.Vulkan;

/// <summary>A storage buffer in device (or host) memory. Dispose frees it; a disposed buffer cannot be bound.</summary>
public unsafe class GpuBuffer : IDisposable
{
    private readonly GpuDevice _device;
    private readonly Allocation _allocation;
    private bool _disposed;

    internal GpuBuffer(GpuDevice device, ulong sizeBytes, MemoryKind kind, string? name)
    {
        if (sizeBytes == 0)
        {
            throw new ArgumentOutOfRangeException(nameof(sizeBytes), "A buffer needs at least one byte.");
        }

        device.ThrowIfUnusable();
        _device = device;
        SizeBytes = sizeBytes;
        Kind = kind;
        Name = name ?? "buffer";
        var info = new BufferCreateInfo
        {
            SType = StructureType.BufferCreateInfo,
            Size = sizeBytes,
            Usage = BufferUsageFlags.StorageBufferBit | BufferUsageFlags.TransferSrcBit | BufferUsageFlags.TransferDstBit,
            SharingMode = SharingMode.Exclusive,
        };
        device.Guard(device.Api.CreateBuffer(device.Handle, in info, null, out var handle), "vkCreateBuffer");
        Handle = handle;
        try
        {
            device.Api.GetBufferMemoryRequirements(device.Handle, handle, out var req);
            _allocation = device.Memory.Allocate(req, kind, new AllocationPurpose(Name, sizeBytes));
            device.Guard(device.Api.BindBufferMemory(device.Handle, handle, _allocation.Block.Memory, _allocation.Offset), "vkBindBufferMemory");
            if (device.PoisonNewBuffers && _allocation.Mapped != null)
            {
                for (ulong at = 0; at < sizeBytes; at += int.MaxValue)
                {
                    new Span<byte>(_allocation.Mapped + at, (int)Math.Min(int.MaxValue, sizeBytes - at)).Fill(0xFF);
                }
            }

            device.Adopt(this);
        }
        catch
        {
            if (_allocation is not null)
            {
                device.Memory.Free(_allocation);
            }

            device.Api.DestroyBuffer(device.Handle, handle, null);
            throw;
        }
    }

    public VkBuffer Handle { get; }

    public ulong SizeBytes { get; }

    public MemoryKind Kind { get; }

    public string Name { get; }

    public GpuDevice Device => _device;

    public bool IsDisposed => _disposed;

    /// <summary>Host pointer when the memory is host-visible and coherent (unified memory, staging), else null.</summary>
    internal byte* Mapped => _allocation.Mapped;

    /// <summary>
    /// The most bytes one host transfer views at a time: a byte span cannot pass 2 GiB, so larger tensors move in
    /// pieces (internal so tests can shrink it).
    /// </summary>
    internal static int PieceBytes { get; set; } = 1 << 30;

    /// <summary>Copies host data into the buffer at <paramref name="offsetBytes"/> (directly where mapped, else through staging).</summary>
    public void Upload<T>(ReadOnlySpan<T> data, ulong offsetBytes = 0) where T : unmanaged
    {
        CheckRange(offsetBytes, (ulong)data.Length * (ulong)Unsafe.SizeOf<T>(), nameof(data));
        foreach (var (at, count, offset) in Pieces<T>(data.Length, offsetBytes))
        {
            UploadPiece(data.Slice(at, count), offset);
        }
    }

    /// <summary>Elements [at, at + count) of a host span, at byte <c>offset</c> of the buffer: pieces of at most <see cref="PieceBytes"/>.</summary>
    private static IEnumerable<(int At, int Count, ulong Offset)> Pieces<T>(int length, ulong offsetBytes) where T : unmanaged
    {
        var size = Unsafe.SizeOf<T>();
        var per = Math.Max(1, PieceBytes / size);
        for (var at = 0; at < length; at += per)
        {
            yield return (at, Math.Min(per, length - at), offsetBytes + (ulong)at * (ulong)size);
        }
    }

    private void UploadPiece<T>(ReadOnlySpan<T> data, ulong offsetBytes) where T : unmanaged
    {
        var bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(data);
        CheckRange(offsetBytes, (ulong)bytes.Length, nameof(data));
        if (Mapped != null)
        {
            _device.WaitForLaunched(this);
            bytes.CopyTo(new Span<byte>(Mapped + offsetBytes, bytes.Length));
            return;
        }

        _device.Staging.Upload(this, offsetBytes, bytes);
    }

    /// <summary>Copies buffer contents at <paramref name="offsetBytes"/> into <paramref name="destination"/>.</summary>
    public void Download<T>(Span<T> destination, ulong offsetBytes = 0) where T : unmanaged
    {
        CheckRange(offsetBytes, (ulong)destination.Length * (ulong)Unsafe.SizeOf<T>(), nameof(destination));
        foreach (var (at, count, offset) in Pieces<T>(destination.Length, offsetBytes))
        {
            DownloadPiece(destination.Slice(at, count), offset);
        }
    }

    private void DownloadPiece<T>(Span<T> destination, ulong offsetBytes) where T : unmanaged
    {
        var bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(destination);
        CheckRange(offsetBytes, (ulong)bytes.Length, nameof(destination));
        if (Mapped != null)
        {
            _device.WaitForLaunched(this);
            new ReadOnlySpan<byte>(Mapped + offsetBytes, bytes.Length).CopyTo(bytes);
            return;
        }

        _device.Staging.Download(this, offsetBytes, bytes);
    }

    /// <summary>
    /// The host's view of <paramref name="length"/> elements at <paramref name="offsetBytes"/> of a host-visible
    /// buffer (<see cref="MemoryKind.Upload"/>, <see cref="MemoryKind.Readback"/>), without waiting for the device
    /// as <see cref="Upload{T}"/> and <see cref="Download{T}"/> do: for a caller that knows the submissions touching
    /// those bytes have completed. It makes no device call, so any thread may use it.
    /// </summary>
    public Span<T> HostView<T>(ulong offsetBytes, int length) where T : unmanaged
    {
        CheckRange(offsetBytes, (ulong)length * (ulong)Unsafe.SizeOf<T>(), nameof(length));
        if (Mapped == null)
        {
            throw new InvalidOperationException($"{Name} is not host-visible ({Kind} memory); create it as Upload or Readback for a host view.");
        }

        return new Span<T>(Mapped + offsetBytes, length);
    }

    internal void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    private void CheckRange(ulong offset, ulong length, string argument)
    {
        ThrowIfDisposed();
        if (offset + length > SizeBytes)
        {
            throw new ArgumentOutOfRangeException(argument,
                $"{length} bytes at offset {offset} do not fit in {Name} ({SizeBytes} bytes).");
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _device.Release(this);
        _device.Api.DestroyBuffer(_device.Handle, Handle, null);
        _device.Memory.Free(_allocation);
        GC.SuppressFinalize(this);
    }
}

/// <summary>A buffer of <typeparamref name="T"/> elements.</summary>
public sealed class GpuBuffer<T> : GpuBuffer where T : unmanaged
{
    internal GpuBuffer(GpuDevice device, long length, MemoryKind kind, string? name)
        : base(device, checked((ulong)length * (ulong)Unsafe.SizeOf<T>()), kind, name) => Length = length;

    public long Length { get; }

    public void Upload(ReadOnlySpan<T> data) => Upload<T>(data);

    public T[] Download()
    {
        var result = new T[Length];
        Download<T>(result);
        return result;
    }
}

public sealed partial class GpuDevice
{
    internal StagingPool Staging => _staging;

    /// <summary>Creates an uninitialized buffer of <paramref name="sizeBytes"/> bytes.</summary>
    public GpuBuffer CreateBuffer(ulong sizeBytes, string? name = null, MemoryKind kind = MemoryKind.Device) =>
        new(this, sizeBytes, kind, name);

    /// <summary>Creates an uninitialized buffer of <paramref name="length"/> elements.</summary>
    public GpuBuffer<T> CreateBuffer<T>(long length, string? name = null, MemoryKind kind = MemoryKind.Device) where T : unmanaged
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        return new GpuBuffer<T>(this, length, kind, name);
    }

    /// <summary>Creates a buffer holding <paramref name="data"/>.</summary>
    public GpuBuffer<T> CreateBuffer<T>(ReadOnlySpan<T> data, string? name = null) where T : unmanaged
    {
        var buffer = CreateBuffer<T>(data.Length, name);
        buffer.Upload(data);
        return buffer;
    }
}
