using System.Runtime.CompilerServices;
using Silk.NET.Vulkan;

namespace Mamba2.Vulkan;

/// <summary>A buffer range bound to one kernel binding. A plain <see cref="GpuBuffer"/> converts to its whole range.</summary>
public readonly record struct BufferBinding(GpuBuffer Buffer, ulong Offset, ulong Size)
{
    public static implicit operator BufferBinding(GpuBuffer buffer) => new(buffer, 0, buffer.SizeBytes);
}

/// <summary>
/// Records transfers and dispatches into one command buffer, inserting a barrier exactly where a command touches a
/// buffer that an earlier command since the last barrier wrote (or writes one that was read), then submits them as
/// one batch. Once submitted the recording is closed; <see cref="Submit"/> may be called again to replay it.
/// </summary>
public sealed unsafe class CommandStream : IDisposable
{
    private const int MaxTimestamps = 4096;   // a profiled training step of a 24-layer model marks ~450 sections
    private const int MaxCommandTimestamps = 32768;   // ... and records a few thousand commands
    private const uint SetsPerPool = 128;

    private readonly GpuDevice _device;
    private readonly Vk _vk;
    private readonly CommandBuffer _cmd;
    private readonly List<DescriptorPool> _pools = [];
    // Hazard tracking, on every dispatch: its lists are reused across barriers and its per-dispatch scratch across
    // dispatches (a training step records thousands; their garbage made the host pause for collections).
    private readonly Dictionary<ulong, List<Access>> _sinceBarrier = [];
    private readonly Stack<List<Access>> _spareAccessLists = new();
    private (GpuBuffer, ulong, ulong, bool, bool)[] _dispatchAccesses = new (GpuBuffer, ulong, ulong, bool, bool)[16];
    private readonly HashSet<GpuBuffer> _used = [];
    private readonly List<string> _labels = [];
    private readonly List<string> _scopes = [];
    private readonly List<IDisposable> _owned = [];
    private QueryPool _queries;
    private int _queryCapacity;
    private readonly string _label;
    private QueryPool _spanQueries;   // this stream's begin and end, for _timeline
    private readonly StreamTimeline? _timeline;
    private double _hostBeginMs, _hostLaunchMs;   // on _timeline's host clock
    private readonly object _fenceLock = new();   // Wait, Dispose and a mapped transfer's WaitForLaunched may each complete it: once
    private Fence _fence;   // submitted and not yet known finished (guarded by _fenceLock)
    private bool _launched;   // between Launch and Wait
    private bool _recording = true;
    private bool _disposed;

    internal CommandStream(GpuDevice device, string label)
    {
        _device = device;
        _label = label;
        _vk = device.Api;
        var alloc = new CommandBufferAllocateInfo
        {
            SType = StructureType.CommandBufferAllocateInfo,
            CommandPool = device.CommandPool,
            Level = CommandBufferLevel.Primary,
            CommandBufferCount = 1,
        };
        CommandBuffer cmd;
        device.Guard(_vk.AllocateCommandBuffers(device.Handle, in alloc, &cmd), "vkAllocateCommandBuffers");
        _cmd = cmd;
        device.Adopt(this);
        var begin = new CommandBufferBeginInfo { SType = StructureType.CommandBufferBeginInfo };
        device.Guard(_vk.BeginCommandBuffer(_cmd, in begin), "vkBeginCommandBuffer");
        // Streams may be launched without waiting for the one before (Launch): this barrier's first scope is every
        // command submitted earlier to the queue, so what they wrote is visible here and what they read is not
        // overwritten before they are done.
        RecordMemoryBarrier();
        if (device.Timeline is { } timeline)
        {
            var info = new QueryPoolCreateInfo { SType = StructureType.QueryPoolCreateInfo, QueryType = QueryType.Timestamp, QueryCount = 2 };
            device.Guard(_vk.CreateQueryPool(device.Handle, in info, null, out _spanQueries), "vkCreateQueryPool");
            _vk.CmdResetQueryPool(_cmd, _spanQueries, 0, 2);
            _vk.CmdWriteTimestamp(_cmd, PipelineStageFlags.BottomOfPipeBit, _spanQueries, 0);
            _timeline = timeline;
            _hostBeginMs = timeline.HostNowMs;
        }
    }

    /// <summary>
    /// Disposes <paramref name="resource"/> with this stream: scratch buffers that recorded commands use must live
    /// through every submit (and replay) of the stream.
    /// </summary>
    public T Own<T>(T resource)
        where T : IDisposable
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _owned.Add(resource);
        return resource;
    }

    /// <summary>The device this stream records for.</summary>
    public GpuDevice Device => _device;

    /// <summary>Barriers recorded so far (a measure of how much the batch is serialized).</summary>
    public int BarrierCount { get; private set; }

    public int DispatchCount { get; private set; }

    /// <summary>Records a dispatch with push constants <paramref name="push"/>.</summary>
    public void Dispatch<TPush>(Kernel kernel, (uint X, uint Y, uint Z) groups, in TPush push, params ReadOnlySpan<BufferBinding> bindings)
        where TPush : unmanaged
    {
        if (Unsafe.SizeOf<TPush>() != kernel.Source.PushConstantBytes)
        {
            throw new ArgumentException(
                $"{kernel.Source.Name} takes {kernel.Source.PushConstantBytes} bytes of push constants; {typeof(TPush).Name} has {Unsafe.SizeOf<TPush>()}.",
                nameof(push));
        }

        fixed (TPush* p = &push)
        {
            DispatchCore(kernel, groups, (byte*)p, bindings);
        }
    }

    /// <summary>Records a dispatch of a kernel without push constants.</summary>
    public void Dispatch(Kernel kernel, (uint X, uint Y, uint Z) groups, params ReadOnlySpan<BufferBinding> bindings)
    {
        if (kernel.Source.PushConstantBytes != 0)
        {
            throw new ArgumentException($"{kernel.Source.Name} needs {kernel.Source.PushConstantBytes} bytes of push constants.");
        }

        DispatchCore(kernel, groups, null, bindings);
    }

    /// <summary>Fills a range with a 32-bit pattern (offset and size multiples of 4).</summary>
    public void Fill(GpuBuffer buffer, uint pattern, ulong offset = 0, ulong? size = null)
    {
        var n = size ?? buffer.SizeBytes - offset;
        CheckRange(buffer, offset, n, nameof(buffer));
        if (offset % 4 != 0 || n % 4 != 0)
        {
            throw new ArgumentException($"Fill needs 4-byte aligned offset and size (got {offset}, {n}).");
        }

        Track((buffer, offset, n, false, true));
        _vk.CmdFillBuffer(_cmd, buffer.Handle, offset, n, pattern);
        if (MarksCommands)
        {
            MarkCommand("fill");
        }
    }

    /// <summary>Fills a float buffer with <paramref name="value"/> (NaN poisons outputs in tests).</summary>
    public void Fill(GpuBuffer buffer, float value) => Fill(buffer, BitConverter.SingleToUInt32Bits(value));

    public void Copy(GpuBuffer source, ulong sourceOffset, GpuBuffer destination, ulong destinationOffset, ulong size)
    {
        CheckRange(source, sourceOffset, size, nameof(source));
        CheckRange(destination, destinationOffset, size, nameof(destination));
        Track((source, sourceOffset, size, true, false), (destination, destinationOffset, size, false, true));
        var region = new BufferCopy(sourceOffset, destinationOffset, size);
        _vk.CmdCopyBuffer(_cmd, source.Handle, destination.Handle, 1, &region);
        if (MarksCommands)
        {
            MarkCommand("copy");
        }
    }

    /// <summary>
    /// Records a copy of <paramref name="data"/>, as it is now, into <paramref name="target"/> at
    /// <paramref name="offsetBytes"/>: the values wait in a host-visible buffer this stream owns. Unlike
    /// <see cref="GpuBuffer.Upload{T}"/> into device-only memory, which submits a copy through staging and waits for it
    /// (and so for everything launched before it), the host goes on at once: launch the stream, and the streams
    /// launched after it see the values.
    /// </summary>
    public void Upload<T>(GpuBuffer target, ReadOnlySpan<T> data, ulong offsetBytes = 0)
        where T : unmanaged
    {
        EnsureRecording();
        target.ThrowIfDisposed();
        if (data.IsEmpty)
        {
            return;
        }

        var bytes = (ulong)data.Length * (ulong)Unsafe.SizeOf<T>();
        CheckRange(target, offsetBytes, bytes, nameof(target));

        var held = Own(new GpuBuffer(_device, bytes, MemoryKind.Upload, target.Name + " (upload)"));
        held.Upload(data);   // mapped: a memcpy, in pieces a span can hold
        Copy(held, 0, target, offsetBytes, bytes);
    }

    /// <summary>
    /// Makes every later command wait for every earlier one, dependent or not (timing loops use it so that
    /// consecutive independent runs do not overlap).
    /// </summary>
    public void Barrier()
    {
        EnsureRecording();
        RecordBarrier();
    }

    /// <summary>
    /// Whether <see cref="Section"/> marks are recorded. Off by default: a mark serializes the GPU (a barrier), so
    /// it belongs in a profiling run, not in a timed or production one.
    /// </summary>
    public bool Profiling { get; set; }

    /// <summary>
    /// With <see cref="Profiling"/> also on, a barrier and a timestamp after every dispatch, fill and copy, labelled
    /// <see cref="GpuTimings.CommandMark"/> and the kernel's name ("fill", "copy"): <see cref="GpuTimings.Commands"/>
    /// sums them by section and kernel, and <see cref="GpuTimings.Sections"/> still by section. Every command then
    /// runs alone, so commands that would overlap read longer than they take in an unprofiled run.
    /// </summary>
    public bool ProfilingCommands { get; set; }

    private bool MarksCommands => Profiling && ProfilingCommands;

    private void MarkCommand(string name)
    {
        Barrier();
        Timestamp(GpuTimings.CommandMark + name);
    }

    /// <summary>
    /// With <see cref="Profiling"/> on, a barrier then a timestamp labelled <paramref name="name"/>: the GPU time
    /// since the previous timestamp belongs to that section (<see cref="GpuTimings.Sections"/> sums it by name).
    /// Inside <see cref="SectionScope"/>s the label is the scopes' names and <paramref name="name"/> joined by '/'.
    /// Without profiling, nothing: library code can mark its sections at no cost.
    /// </summary>
    public void Section(string name)
    {
        if (Profiling)
        {
            Barrier();
            Timestamp(_scopes.Count == 0 ? name : $"{string.Join('/', _scopes)}/{name}");
        }
    }

    /// <summary>
    /// Opens a named group of sections: marks inside it are labelled "<paramref name="name"/>/mark", and closing it marks
    /// the work since its last inner mark as <paramref name="name"/> itself, so the group's whole time is accounted
    /// for (<see cref="GpuTimings.Sections"/> with a depth sums a group into one row). Mark the work before a scope
    /// first: its first inner section starts at the previous mark.
    /// </summary>
    public SectionGroup SectionScope(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (name.Contains('/'))
        {
            throw new ArgumentException($"section scope '{name}' contains '/', the separator of nested names.", nameof(name));
        }

        _scopes.Add(name);
        return new SectionGroup(this, _scopes.Count);
    }

    internal void CloseScope(int depth)
    {
        if (_scopes.Count != depth)
        {
            throw new InvalidOperationException($"section scope '{_scopes[depth - 1]}' closed while {_scopes.Count - depth} inner scope(s) are open.");
        }

        var name = _scopes[^1];
        _scopes.RemoveAt(_scopes.Count - 1);
        if (!_disposed && _recording)
        {
            Section(name);
        }
    }

    /// <summary>Records a GPU timestamp taken when all earlier commands have finished.</summary>
    public void Timestamp(string label)
    {
        EnsureRecording();
        if (!_device.Capabilities.Timestamps)
        {
            throw new MissingFeatureException($"{_device.Name} has no timestamp support on its compute queue.");
        }

        if (_queries.Handle == 0)
        {
            _queryCapacity = ProfilingCommands ? MaxCommandTimestamps : MaxTimestamps;
            var info = new QueryPoolCreateInfo { SType = StructureType.QueryPoolCreateInfo, QueryType = QueryType.Timestamp, QueryCount = (uint)_queryCapacity };
            _device.Guard(_vk.CreateQueryPool(_device.Handle, in info, null, out _queries), "vkCreateQueryPool");
            _vk.CmdResetQueryPool(_cmd, _queries, 0, (uint)_queryCapacity);
        }

        if (_labels.Count == _queryCapacity)
        {
            throw new InvalidOperationException($"At most {_queryCapacity} timestamps per stream{(_queryCapacity < MaxCommandTimestamps ? $" ({MaxCommandTimestamps} with ProfilingCommands set before the first)" : "")}.");
        }

        _vk.CmdWriteTimestamp(_cmd, PipelineStageFlags.BottomOfPipeBit, _queries, (uint)_labels.Count);
        _labels.Add(label);
    }

    /// <summary>Submits the batch and waits for it. Returns the timestamps recorded in it.</summary>
    public GpuTimings Submit()
    {
        Launch();
        return Wait();
    }

    /// <summary>Whether the host has seen this launched stream finish (a wait, or a mapped transfer that waited for it).</summary>
    internal bool Completed
    {
        get
        {
            lock (_fenceLock)
            {
                return _launched && _fence.Handle == 0;
            }
        }
    }

    /// <summary>Whether a command recorded into this stream reads or writes <paramref name="buffer"/>.</summary>
    internal bool Uses(GpuBuffer buffer) => _used.Contains(buffer);

    /// <summary>True between <see cref="Launch"/> and the end of <see cref="Wait"/>.</summary>
    public bool IsLaunched => _launched;

    /// <summary>
    /// Submits the batch and returns at once, so that the host can record the next while the device runs this one.
    /// Streams run in the order they are launched, each seeing what the ones before wrote. <see cref="Wait"/>
    /// (or <see cref="Dispose"/>, which waits) must follow before what the stream owns is freed; the host reading
    /// or writing a buffer's mapped memory (<see cref="GpuBuffer.Upload{T}"/>, <see cref="GpuBuffer.Download{T}"/>)
    /// first waits for the launched streams that use that buffer.
    /// </summary>
    public void Launch()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (IsLaunched)
        {
            throw new InvalidOperationException("This stream is already launched: Wait for it first.");
        }

        foreach (var b in _used)
        {
            // A buffer freed after recording would be a GPU use-after-free.
            b.ThrowIfDisposed();
        }

        if (_recording)
        {
            if (_spanQueries.Handle != 0)
            {
                _vk.CmdWriteTimestamp(_cmd, PipelineStageFlags.BottomOfPipeBit, _spanQueries, 1);
            }

            var toHost = new MemoryBarrier
            {
                SType = StructureType.MemoryBarrier,
                SrcAccessMask = AccessFlags.ShaderWriteBit | AccessFlags.TransferWriteBit,
                DstAccessMask = AccessFlags.HostReadBit,
            };
            _vk.CmdPipelineBarrier(_cmd, PipelineStageFlags.ComputeShaderBit | PipelineStageFlags.TransferBit,
                PipelineStageFlags.HostBit, 0, 1, &toHost, 0, null, 0, null);
            _device.Guard(_vk.EndCommandBuffer(_cmd), "vkEndCommandBuffer");
            _recording = false;
        }

        if (_timeline is not null)
        {
            _hostLaunchMs = _timeline.HostNowMs;
        }

        lock (_fenceLock)
        {
            _fence = _device.Launch(_cmd, this);
        }

        _launched = true;
    }

    /// <summary>Waits for a launched stream to finish and returns the timestamps recorded in it.</summary>
    public GpuTimings Wait()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!IsLaunched)
        {
            throw new InvalidOperationException("This stream was not launched: Launch or Submit it first.");
        }

        _launched = false;
        Complete();
        if (_timeline is not null)
        {
            var span = ReadQueries(_spanQueries, 2);
            _timeline.Add(new StreamSpan(_label, span[0], span[1], _hostBeginMs, _hostLaunchMs));
        }

        return ReadTimestamps();
    }

    /// <summary>
    /// Waits until the device has finished this stream's submission, unless it is known finished (another wait
    /// already completed it, or it was never launched); <see cref="GpuDevice.WaitForLaunched"/> calls it too.
    /// </summary>
    internal void Complete()
    {
        lock (_fenceLock)
        {
            if (_fence.Handle == 0)
            {
                return;
            }

            var fence = _fence;
            _fence = default;
            var from = _timeline?.HostNowMs ?? 0;
            _device.WaitFor(fence, this);
            _timeline?.AddWait(new HostWait(_label, from, _timeline.HostNowMs - from));
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        try
        {
            // What the stream owns may still be in use on the device. A lost device has stopped using it.
            _launched = false;
            Complete();
        }
        catch (DeviceLostException)
        {
        }

        _disposed = true;
        _device.Release(this);
        var cmd = _cmd;
        _vk.FreeCommandBuffers(_device.Handle, _device.CommandPool, 1, &cmd);
        foreach (var pool in _pools)
        {
            _vk.DestroyDescriptorPool(_device.Handle, pool, null);
        }

        if (_queries.Handle != 0)
        {
            _vk.DestroyQueryPool(_device.Handle, _queries, null);
        }

        if (_spanQueries.Handle != 0)
        {
            _vk.DestroyQueryPool(_device.Handle, _spanQueries, null);
        }

        for (var i = _owned.Count - 1; i >= 0; i--)
        {
            _owned[i].Dispose();
        }
    }

    private void DispatchCore(Kernel kernel, (uint X, uint Y, uint Z) groups, byte* push, ReadOnlySpan<BufferBinding> bindings)
    {
        EnsureRecording();
        var source = kernel.Source;
        if (bindings.Length != source.Bindings.Count)
        {
            throw new ArgumentException($"{source.Name} has {source.Bindings.Count} bindings; {bindings.Length} buffers were given.", nameof(bindings));
        }

        var caps = _device.Capabilities;
        var max = caps.MaxWorkgroupCount;
        if (groups.X > max.X || groups.Y > max.Y || groups.Z > max.Z)
        {
            throw new ArgumentOutOfRangeException(nameof(groups),
                $"{source.Name}: grid ({groups.X}, {groups.Y}, {groups.Z}) exceeds {_device.Name}'s limit ({max.X}, {max.Y}, {max.Z}); the kernel must loop with a stride.");
        }

        var infos = stackalloc DescriptorBufferInfo[bindings.Length];
        for (var i = 0; i < bindings.Length; i++)
        {
            var b = bindings[i];
            CheckRange(b.Buffer, b.Offset, b.Size, nameof(bindings), i);

            if (b.Size > caps.MaxStorageBufferRange)
            {
                throw new ArgumentOutOfRangeException(nameof(bindings),
                    $"{source.Name} binding {i}: {b.Size} bytes exceed {_device.Name}'s maxStorageBufferRange ({caps.MaxStorageBufferRange}); bind the tensor in pieces.");
            }

            if (b.Offset % caps.MinStorageBufferOffsetAlignment != 0)
            {
                throw new ArgumentException(
                    $"{source.Name} binding {i}: offset {b.Offset} is not a multiple of minStorageBufferOffsetAlignment ({caps.MinStorageBufferOffsetAlignment}).",
                    nameof(bindings));
            }

            infos[i] = new DescriptorBufferInfo(b.Buffer.Handle, b.Offset, b.Size);
        }

        if (groups.X == 0 || groups.Y == 0 || groups.Z == 0)
        {
            return;
        }

        // One buffer may back several bindings (in-place ops): each binding's range is tracked with its access; two
        // of one dispatch never conflict with each other.
        if (_dispatchAccesses.Length < bindings.Length)
        {
            _dispatchAccesses = new (GpuBuffer, ulong, ulong, bool, bool)[bindings.Length];
        }

        var accesses = _dispatchAccesses.AsSpan(0, bindings.Length);
        for (var i = 0; i < bindings.Length; i++)
        {
            var access = source.Bindings[i];
            accesses[i] = (bindings[i].Buffer, bindings[i].Offset, bindings[i].Size, access != BufferAccess.Write, access != BufferAccess.Read);
        }

        Track(accesses);
        accesses.Clear();   // holds no buffer past its dispatch

        var set = AllocateSet(kernel.SetLayout, bindings.Length);
        var writes = stackalloc WriteDescriptorSet[bindings.Length];
        for (var i = 0; i < bindings.Length; i++)
        {
            writes[i] = new WriteDescriptorSet
            {
                SType = StructureType.WriteDescriptorSet,
                DstSet = set,
                DstBinding = (uint)i,
                DescriptorCount = 1,
                DescriptorType = DescriptorType.StorageBuffer,
                PBufferInfo = &infos[i],
            };
        }

        _vk.UpdateDescriptorSets(_device.Handle, (uint)bindings.Length, writes, 0, null);
        _vk.CmdBindPipeline(_cmd, PipelineBindPoint.Compute, kernel.Pipeline);
        _vk.CmdBindDescriptorSets(_cmd, PipelineBindPoint.Compute, kernel.Layout, 0, 1, &set, 0, null);
        if (push != null)
        {
            _vk.CmdPushConstants(_cmd, kernel.Layout, ShaderStageFlags.ComputeBit, 0, (uint)source.PushConstantBytes, push);
        }

        _vk.CmdDispatch(_cmd, groups.X, groups.Y, groups.Z);
        DispatchCount++;
        if (MarksCommands)
        {
            MarkCommand(source.Name);   // the name is a new string: only when profiling (dispatches allocate nothing)
        }
    }

    /// <summary>
    /// Adds one barrier before a command if any of its accesses conflicts with an access since the last barrier to an
    /// overlapping byte range of the same buffer (read after write, write after write, write after read), then
    /// records its accesses. Disjoint slices of one buffer (a batch cut in pieces, one tensor's slot of a shared
    /// scratch) need none between them.
    /// </summary>
    private void Track(params ReadOnlySpan<(GpuBuffer Buffer, ulong Offset, ulong Size, bool Read, bool Write)> accesses)
    {
        EnsureRecording();
        var hazard = false;
        foreach (var (buffer, offset, size, read, write) in accesses)
        {
            _used.Add(buffer);
            var end = End(buffer, offset, size);
            if (!hazard && _sinceBarrier.TryGetValue(buffer.Handle.Handle, out var prior))
            {
                foreach (var p in prior)
                {
                    if (offset < p.End && p.Start < end && ((read && p.Written) || (write && (p.Written || p.Read))))
                    {
                        hazard = true;
                        break;
                    }
                }
            }
        }

        if (hazard)
        {
            RecordBarrier();
        }

        foreach (var (buffer, offset, size, read, write) in accesses)
        {
            if (!_sinceBarrier.TryGetValue(buffer.Handle.Handle, out var list))
            {
                list = _spareAccessLists.TryPop(out var spare) ? spare : [];
                _sinceBarrier[buffer.Handle.Handle] = list;
            }

            list.Add(new Access(offset, End(buffer, offset, size), read, write));
        }
    }

    /// <summary>The end of a range, at most the buffer's (a size of Vulkan's WHOLE_SIZE means "to the end").</summary>
    private static ulong End(GpuBuffer buffer, ulong offset, ulong size) =>
        offset >= buffer.SizeBytes || size >= buffer.SizeBytes - offset ? buffer.SizeBytes : offset + size;

    /// <summary>A command's access to bytes [Start, End) of a buffer.</summary>
    private readonly record struct Access(ulong Start, ulong End, bool Read, bool Written);

    private void RecordBarrier()
    {
        RecordMemoryBarrier();
        BarrierCount++;
        foreach (var list in _sinceBarrier.Values)
        {
            list.Clear();
            _spareAccessLists.Push(list);
        }

        _sinceBarrier.Clear();
    }

    private void RecordMemoryBarrier()
    {
        var barrier = new MemoryBarrier
        {
            SType = StructureType.MemoryBarrier,
            SrcAccessMask = AccessFlags.ShaderWriteBit | AccessFlags.TransferWriteBit,
            DstAccessMask = AccessFlags.ShaderReadBit | AccessFlags.ShaderWriteBit | AccessFlags.TransferReadBit | AccessFlags.TransferWriteBit,
        };
        var stages = PipelineStageFlags.ComputeShaderBit | PipelineStageFlags.TransferBit;
        _vk.CmdPipelineBarrier(_cmd, stages, stages, 0, 1, &barrier, 0, null, 0, null);
    }

    private DescriptorSet AllocateSet(DescriptorSetLayout layout, int bindingCount)
    {
        var l = layout;
        if (_pools.Count > 0)
        {
            var info = new DescriptorSetAllocateInfo
            {
                SType = StructureType.DescriptorSetAllocateInfo,
                DescriptorPool = _pools[^1],
                DescriptorSetCount = 1,
                PSetLayouts = &l,
            };
            DescriptorSet set;
            var r = _vk.AllocateDescriptorSets(_device.Handle, in info, &set);
            if (r == Result.Success)
            {
                return set;
            }

            if (r is not (Result.ErrorOutOfPoolMemory or Result.ErrorFragmentedPool))
            {
                _device.Guard(r, "vkAllocateDescriptorSets");
            }
        }

        var size = new DescriptorPoolSize(DescriptorType.StorageBuffer, SetsPerPool * (uint)Math.Max(16, bindingCount));
        var poolInfo = new DescriptorPoolCreateInfo
        {
            SType = StructureType.DescriptorPoolCreateInfo,
            MaxSets = SetsPerPool,
            PoolSizeCount = 1,
            PPoolSizes = &size,
        };
        _device.Guard(_vk.CreateDescriptorPool(_device.Handle, in poolInfo, null, out var pool), "vkCreateDescriptorPool");
        _pools.Add(pool);
        var alloc = new DescriptorSetAllocateInfo
        {
            SType = StructureType.DescriptorSetAllocateInfo,
            DescriptorPool = pool,
            DescriptorSetCount = 1,
            PSetLayouts = &l,
        };
        DescriptorSet fresh;
        _device.Guard(_vk.AllocateDescriptorSets(_device.Handle, in alloc, &fresh), "vkAllocateDescriptorSets");
        return fresh;
    }

    private GpuTimings ReadTimestamps()
    {
        if (_labels.Count == 0)
        {
            return new GpuTimings([], []);
        }

        return new GpuTimings(_labels.ToArray(), ReadQueries(_queries, _labels.Count));
    }

    /// <summary>The first <paramref name="count"/> timestamps of <paramref name="pool"/>, in nanoseconds.</summary>
    private double[] ReadQueries(QueryPool pool, int count)
    {
        var raw = new ulong[count];
        fixed (ulong* p = raw)
        {
            _device.Guard(_vk.GetQueryPoolResults(_device.Handle, pool, 0, (uint)count, (nuint)(raw.Length * 8), p, 8,
                QueryResultFlags.Result64Bit | QueryResultFlags.ResultWaitBit), "vkGetQueryPoolResults");
        }

        var bits = _device.Info.TimestampValidBits;
        var mask = bits >= 64 ? ulong.MaxValue : (1UL << (int)bits) - 1;
        var period = _device.Capabilities.TimestampPeriodNs;
        return [.. raw.Select(t => (t & mask) * (double)period)];
    }

    private void EnsureRecording()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_recording)
        {
            throw new InvalidOperationException("This stream was submitted; record new work in a new stream.");
        }
    }

    // index: the argument's element (a binding), named only when the error is thrown: this runs for every binding.
    private static void CheckRange(GpuBuffer buffer, ulong offset, ulong size, string argument, int? index = null)
    {
        buffer.ThrowIfDisposed();
        if (size == 0 || offset + size > buffer.SizeBytes)
        {
            throw new ArgumentOutOfRangeException(index is { } i ? $"{argument}[{i}]" : argument, $"range [{offset}, {offset + size}) is empty or outside {buffer.Name} ({buffer.SizeBytes} bytes).");
        }
    }
}

/// <summary>An open <see cref="CommandStream.SectionScope"/>; disposing it closes the scope.</summary>
public readonly struct SectionGroup : IDisposable
{
    private readonly CommandStream? _stream;
    private readonly int _depth;

    internal SectionGroup(CommandStream stream, int depth) => (_stream, _depth) = (stream, depth);

    public void Dispose() => _stream?.CloseScope(_depth);
}
