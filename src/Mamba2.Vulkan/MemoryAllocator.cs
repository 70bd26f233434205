using Silk.NET.Vulkan;

namespace Mamba2.Vulkan;

/// <summary>Where a buffer lives: fast device memory, or host memory for staging in either direction.</summary>
public enum MemoryKind
{
    Device,
    Upload,
    Readback,
}

/// <summary>A piece of a <see cref="MemoryBlock"/>. <see cref="Mapped"/> is non-null when the host can write it directly.</summary>
internal sealed unsafe class Allocation
{
    public required MemoryBlock Block { get; init; }
    public required ulong Offset { get; init; }
    public required ulong Size { get; init; }
    public byte* Mapped => Block.Mapped == null ? null : Block.Mapped + Offset;
}

/// <summary>What an allocation is for, named in its errors only (so a buffer's creation formats no string).</summary>
internal readonly record struct AllocationPurpose(string Name, ulong Bytes)
{
    public override string ToString() => $"{Name} ({Bytes} bytes)";
}

/// <summary>One vkAllocateMemory; suballocated first-fit with coalescing frees.</summary>
internal sealed unsafe class MemoryBlock
{
    private readonly List<(ulong Offset, ulong Size)> _free;

    public MemoryBlock(DeviceMemory memory, uint typeIndex, ulong size, byte* mapped, bool dedicated)
    {
        Memory = memory;
        TypeIndex = typeIndex;
        Size = size;
        Mapped = mapped;
        Dedicated = dedicated;
        _free = [(0, size)];
        LargestFree = size;
    }

    public DeviceMemory Memory { get; }
    public uint TypeIndex { get; }
    public ulong Size { get; }
    public byte* Mapped { get; }
    public bool Dedicated { get; }

    /// <summary>An empty block kept for reuse, counted in <see cref="MemoryAllocator.CachedBytes"/>.</summary>
    public bool Cached { get; set; }
    public bool IsEmpty => _free.Count == 1 && _free[0].Size == Size;

    /// <summary>The longest free range: a request longer than it is not tried here (a step asks for ~1,000 buffers).</summary>
    public ulong LargestFree { get; private set; }

    public bool TryTake(ulong size, ulong alignment, out ulong offset)
    {
        for (var i = 0; i < _free.Count; i++)
        {
            var (start, length) = _free[i];
            var aligned = (start + alignment - 1) / alignment * alignment;
            var end = aligned + size;
            if (end > start + length)
            {
                continue;
            }

            _free.RemoveAt(i);
            if (end < start + length)
            {
                _free.Insert(i, (end, start + length - end));
            }

            if (aligned > start)
            {
                _free.Insert(i, (start, aligned - start));
            }

            offset = aligned;
            if (length == LargestFree)
            {
                UpdateLargestFree();
            }

            return true;
        }

        offset = 0;
        return false;
    }

    private void UpdateLargestFree()
    {
        ulong largest = 0;
        foreach (var (_, length) in _free)
        {
            largest = Math.Max(largest, length);
        }

        LargestFree = largest;
    }

    public void Give(ulong offset, ulong size)
    {
        var i = 0;
        while (i < _free.Count && _free[i].Offset < offset)
        {
            i++;
        }

        _free.Insert(i, (offset, size));
        if (i + 1 < _free.Count && _free[i].Offset + _free[i].Size == _free[i + 1].Offset)
        {
            _free[i] = (_free[i].Offset, _free[i].Size + _free[i + 1].Size);
            _free.RemoveAt(i + 1);
        }

        if (i > 0 && _free[i - 1].Offset + _free[i - 1].Size == _free[i].Offset)
        {
            _free[i - 1] = (_free[i - 1].Offset, _free[i - 1].Size + _free[i].Size);
            _free.RemoveAt(i);
            i--;
        }

        LargestFree = Math.Max(LargestFree, _free[i].Size);
    }
}

/// <summary>
/// Suballocates device and host memory in blocks no larger than the device's maxMemoryAllocationSize, so a
/// training run makes few vkAllocateMemory calls. Large requests get a dedicated allocation. Blocks that become
/// empty are cached (up to <see cref="CacheLimitBytes"/>): a dedicated one for the next request of about its size,
/// a shared one for any. A training step or a benchmark loop frees and asks for the same buffers every iteration,
/// and a fresh allocation costs a driver call and the driver's clearing of the memory. Reports current and peak use.
/// </summary>
public sealed unsafe class MemoryAllocator : IDisposable
{
    private const ulong DeviceBlockBytes = 256UL << 20;
    private const ulong HostBlockBytes = 64UL << 20;

    private readonly GpuDevice _device;
    private readonly PhysicalDeviceMemoryProperties _props;
    private readonly List<MemoryBlock> _blocks = [];
    private readonly object _lock = new();
    private readonly ulong _largestHeap;

    internal MemoryAllocator(GpuDevice device)
    {
        _device = device;
        _props = device.Api.GetPhysicalDeviceMemoryProperties(device.Info.Handle);
        // A CPU driver's memory is the host's: a cached block would hold pages the rest of the machine needs.
        _largestHeap = Enumerable.Range(0, (int)_props.MemoryHeapCount).Max(i => _props.MemoryHeaps[i].Size);
        CacheLimitBytes = device.Info.IsCpu ? 0 : _largestHeap / 2;
        UnifiedMemory = Enumerable.Range(0, (int)_props.MemoryTypeCount).Select(i => _props.MemoryTypes[i].PropertyFlags)
            .Where(f => f.HasFlag(MemoryPropertyFlags.DeviceLocalBit))
            .All(f => f.HasFlag(MemoryPropertyFlags.HostVisibleBit | MemoryPropertyFlags.HostCoherentBit));
    }

    /// <summary>Bytes held by live buffers.</summary>
    public ulong AllocatedBytes { get; private set; }

    /// <summary>The most <see cref="AllocatedBytes"/> has been since creation or <see cref="ResetPeak"/>.</summary>
    public ulong PeakAllocatedBytes { get; private set; }

    /// <summary>Bytes obtained from the driver (blocks, including their free space).</summary>
    public ulong ReservedBytes { get; private set; }

    /// <summary>vkAllocateMemory calls so far: a loop that frees and asks for the same buffers should stop adding to it.</summary>
    public long DriverAllocations { get; private set; }

    /// <summary>Bytes of empty blocks kept for reuse (part of <see cref="ReservedBytes"/>).</summary>
    public ulong CachedBytes { get; private set; }

    /// <summary>
    /// At most this many bytes of empty blocks are kept (default: half the largest heap on a GPU, none on a CPU
    /// driver; past the limit one empty shared block per memory type stays), and none while the process holds over
    /// three quarters of the heap: the driver needs room of its own. An allocation that finds the device out of
    /// memory releases them and tries again.
    /// </summary>
    public ulong CacheLimitBytes { get; set; }

    /// <summary>
    /// When set, live buffers may hold at most this many bytes: an allocation past it throws
    /// <see cref="OutOfDeviceMemoryException"/> as the driver's out-of-memory does (as PyTorch's
    /// set_per_process_memory_fraction), so a process can leave room on a shared GPU, or meet a smaller one's limit.
    /// </summary>
    public ulong? LimitBytes { get; set; }

    /// <summary>Allocation requests so far, failed ones included: each has its index in this sequence.</summary>
    internal long Requests { get; private set; }

    /// <summary>
    /// Fault injection for tests: the request whose index this is fails with <see cref="OutOfDeviceMemoryException"/>,
    /// so every allocation of a call can be made the one that runs out (a byte limit reaches only those at a new high).
    /// </summary>
    internal long? FailRequest { get; set; }

    /// <summary>Returns every cached block to the driver (as torch.cuda.empty_cache).</summary>
    public void ReleaseCached()
    {
        lock (_lock)
        {
            foreach (var b in _blocks.Where(b => b.Cached).ToList())
            {
                Release(b);
            }
        }
    }

    /// <summary>True where all device-local memory is also host-visible (CPU drivers, most integrated GPUs).</summary>
    public bool UnifiedMemory { get; }

    public void ResetPeak()
    {
        lock (_lock)
        {
            PeakAllocatedBytes = AllocatedBytes;
        }
    }

    internal Allocation Allocate(MemoryRequirements req, MemoryKind kind, AllocationPurpose what)
    {
        lock (_lock)
        {
            if (Requests++ == FailRequest)
            {
                throw new OutOfDeviceMemoryException($"Out of memory allocating {Mib(req.Size)} for {what} on {_device.Name}: request {FailRequest} made to fail (fault injection).");
            }

            var type = ChooseType(req.MemoryTypeBits, kind);
            var caps = _device.Capabilities;
            if (req.Size > caps.MaxAllocationBytes)
            {
                throw new OutOfDeviceMemoryException(
                    $"{what} needs {Mib(req.Size)} in one piece but {_device.Name} allows at most {Mib(caps.MaxAllocationBytes)} per allocation (maxMemoryAllocationSize); split the tensor.");
            }

            if (LimitBytes is { } limit && AllocatedBytes + req.Size > limit)
            {
                throw new OutOfDeviceMemoryException(
                    $"Out of memory allocating {Mib(req.Size)} for {what} on {_device.Name}: live buffers hold {Mib(AllocatedBytes)} of the {Mib(limit)} this process is limited to (MemoryAllocator.LimitBytes).");
            }

            var blockBytes = Math.Min(kind == MemoryKind.Device ? DeviceBlockBytes : HostBlockBytes, caps.MaxAllocationBytes);
            var heapBytes = _props.MemoryHeaps[(int)_props.MemoryTypes[(int)type].HeapIndex].Size;
            blockBytes = Math.Min(blockBytes, Math.Max(heapBytes / 8, 1UL << 20));
            var alignment = Math.Max(req.Alignment, 1);
            Allocation result;
            if (req.Size >= blockBytes / 2)
            {
                var block = TakeCached(type, req.Size) ?? NewBlock(type, req.Size, dedicated: true, what);
                block.TryTake(req.Size, alignment, out var offset);
                result = new Allocation { Block = block, Offset = offset, Size = req.Size };
            }
            else
            {
                result = TakeFromBlocks(type, req.Size, alignment) ?? TakeFromNewBlock(type, req.Size, alignment, blockBytes, what);
            }

            AllocatedBytes += result.Size;
            PeakAllocatedBytes = Math.Max(PeakAllocatedBytes, AllocatedBytes);
            return result;
        }
    }

    internal void Free(Allocation a)
    {
        lock (_lock)
        {
            AllocatedBytes -= a.Size;
            a.Block.Give(a.Offset, a.Size);
            if (!a.Block.IsEmpty)
            {
                return;
            }

            // Empty blocks, dedicated or shared, are kept up to the cache limit; past it one empty shared block per
            // type stays, the rest go back. A layer-a-submission training step empties a few shared blocks after
            // every stage: returning them made each stage ask the driver again, which dominated the step (docs/PERF.md).
            if (CachedBytes + a.Block.Size <= CacheLimitBytes && ReservedBytes <= _largestHeap / 4 * 3)
            {
                a.Block.Cached = true;
                CachedBytes += a.Block.Size;
            }
            else if (a.Block.Dedicated || _blocks.Count(b => b.TypeIndex == a.Block.TypeIndex && b.IsEmpty && !b.Dedicated) > 1)
            {
                Release(a.Block);
            }
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            foreach (var b in _blocks.ToList())
            {
                Release(b);
            }
        }
    }

    /// <summary>The smallest cached dedicated block of this type that holds <paramref name="size"/> without wasting over a fifth of itself.</summary>
    private MemoryBlock? TakeCached(uint type, ulong size)
    {
        MemoryBlock? block = null;
        foreach (var b in _blocks)
        {
            if (b.Cached && b.TypeIndex == type && b.Size >= size && b.Size - size <= b.Size / 5 && (block is null || b.Size < block.Size))
            {
                block = b;
            }
        }

        if (block is not null)
        {
            block.Cached = false;
            CachedBytes -= block.Size;
        }

        return block;
    }

    private Allocation? TakeFromBlocks(uint type, ulong size, ulong alignment)
    {
        // Blocks in use first, so that cached empty ones stay whole for as long as possible. Plain loops: this runs
        // for every buffer a training step makes.
        foreach (var cached in (ReadOnlySpan<bool>)[false, true])
        {
            foreach (var b in _blocks)
            {
                if (b.Dedicated || b.TypeIndex != type || b.Cached != cached || b.LargestFree < size || !b.TryTake(size, alignment, out var offset))
                {
                    continue;
                }

                if (b.Cached)
                {
                    b.Cached = false;
                    CachedBytes -= b.Size;
                }

                return new Allocation { Block = b, Offset = offset, Size = size };
            }
        }

        return null;
    }

    private Allocation TakeFromNewBlock(uint type, ulong size, ulong alignment, ulong blockBytes, AllocationPurpose what)
    {
        var block = NewBlock(type, blockBytes, dedicated: false, what);
        block.TryTake(size, alignment, out var offset);
        return new Allocation { Block = block, Offset = offset, Size = size };
    }

    private MemoryBlock NewBlock(uint type, ulong size, bool dedicated, AllocationPurpose what)
    {
        var vk = _device.Api;
        var info = new MemoryAllocateInfo { SType = StructureType.MemoryAllocateInfo, AllocationSize = size, MemoryTypeIndex = type };
        var r = vk.AllocateMemory(_device.Handle, in info, null, out var memory);
        if ((r is Result.ErrorOutOfDeviceMemory or Result.ErrorOutOfHostMemory) && _blocks.Any(b => b.IsEmpty))
        {
            // What this process keeps but does not use goes back first.
            foreach (var b in _blocks.Where(b => b.IsEmpty).ToList())
            {
                Release(b);
            }

            r = vk.AllocateMemory(_device.Handle, in info, null, out memory);
        }

        if (r is Result.ErrorOutOfDeviceMemory or Result.ErrorOutOfHostMemory)
        {
            var heap = _props.MemoryTypes[(int)type].HeapIndex;
            throw new OutOfDeviceMemoryException(
                $"Out of memory allocating {Mib(size)} for {what} on {_device.Name} (heap {heap} of {Mib(_props.MemoryHeaps[(int)heap].Size)}; " +
                $"this process holds {Mib(ReservedBytes)}, {Mib(AllocatedBytes)} in live buffers).", r);
        }

        _device.Guard(r, "vkAllocateMemory");
        byte* mapped = null;
        var flags = _props.MemoryTypes[(int)type].PropertyFlags;
        if (flags.HasFlag(MemoryPropertyFlags.HostVisibleBit | MemoryPropertyFlags.HostCoherentBit))
        {
            void* p;
            var mr = vk.MapMemory(_device.Handle, memory, 0, Vk.WholeSize, 0, &p);
            if (mr != Result.Success)
            {
                vk.FreeMemory(_device.Handle, memory, null);
                _device.Guard(mr, "vkMapMemory");
            }

            mapped = (byte*)p;
        }

        var block = new MemoryBlock(memory, type, size, mapped, dedicated);
        DriverAllocations++;
        _blocks.Add(block);
        ReservedBytes += size;
        return block;
    }

    private void Release(MemoryBlock b)
    {
        if (b.Mapped != null)
        {
            _device.Api.UnmapMemory(_device.Handle, b.Memory);
        }

        _device.Api.FreeMemory(_device.Handle, b.Memory, null);
        _blocks.Remove(b);
        ReservedBytes -= b.Size;
        if (b.Cached)
        {
            CachedBytes -= b.Size;
        }
    }

    /// <summary>
    /// Device: device-local with the fewest extra flags (avoids small BAR heaps on discrete GPUs).
    /// Upload: host-visible coherent. Readback: the same, cached where offered.
    /// </summary>
    private uint ChooseType(uint typeBits, MemoryKind kind)
    {
        var required = kind == MemoryKind.Device
            ? MemoryPropertyFlags.DeviceLocalBit
            : MemoryPropertyFlags.HostVisibleBit | MemoryPropertyFlags.HostCoherentBit;
        var best = -1;
        var bestScore = int.MaxValue;
        for (var i = 0; i < _props.MemoryTypeCount; i++)
        {
            var flags = _props.MemoryTypes[i].PropertyFlags;
            if ((typeBits & (1u << i)) == 0 || (flags & required) != required)
            {
                continue;
            }

            var score = kind switch
            {
                MemoryKind.Device => System.Numerics.BitOperations.PopCount((uint)flags) - (UnifiedMemory && (flags & MemoryPropertyFlags.HostCoherentBit) != 0 ? 10 : 0),
                MemoryKind.Readback => (flags & MemoryPropertyFlags.HostCachedBit) != 0 ? 0 : 1,
                _ => (flags & MemoryPropertyFlags.DeviceLocalBit) != 0 ? 1 : 0,
            };
            if (score < bestScore)
            {
                best = i;
                bestScore = score;
            }
        }

        if (best < 0)
        {
            throw new MissingFeatureException($"{_device.Name} has no memory type with {required} for {kind} buffers (type bits 0x{typeBits:X}).");
        }

        return (uint)best;
    }

    internal static string Mib(ulong bytes) => $"{bytes / 1048576.0:F1} MiB";
}
