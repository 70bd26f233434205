using Silk.NET.Core.Native;
using Silk.NET.Vulkan;

namespace Mamba2.Vulkan;

/// <summary>
/// An opened Vulkan device with one compute queue: the root object of the runtime. Owns the instance, memory,
/// kernels (with the pipeline cache) and submissions. Not thread-safe for recording; submissions are serialized.
/// </summary>
public sealed unsafe partial class GpuDevice : IDisposable
{
    private readonly VulkanInstance _instance;
    private readonly object _queueLock = new();
    private readonly List<CommandStream> _launched = [];   // submitted, not yet waited for (guarded by _queueLock)
    private readonly KernelCache _kernels;
    private readonly StagingPool _staging;
    private readonly HashSet<IDisposable> _children = [];
    private CommandPool _commandPool;
    private bool _lost;
    private bool _disposed;

    private GpuDevice(VulkanInstance instance, PhysicalDeviceInfo info)
    {
        _instance = instance;
        Info = info;
        Api = instance.Api;
        var (extensions, capabilities) = ChooseExtensions(info);
        if (instance.Options.PipelineStatistics && info.Extensions.Contains(PipelineStatisticsReader.Extension))
        {
            extensions.Add(PipelineStatisticsReader.Extension);
            CapturesPipelineStatistics = true;
        }

        Capabilities = capabilities;
        Handle = CreateLogicalDevice(extensions);
        Api.GetDeviceQueue(Handle, (uint)info.ComputeQueueFamily, 0, out var queue);
        Queue = queue;
        var poolInfo = new CommandPoolCreateInfo
        {
            SType = StructureType.CommandPoolCreateInfo,
            QueueFamilyIndex = (uint)info.ComputeQueueFamily,
            Flags = CommandPoolCreateFlags.ResetCommandBufferBit,
        };
        Api.CreateCommandPool(Handle, in poolInfo, null, out _commandPool).Check("vkCreateCommandPool");
        Memory = new MemoryAllocator(this);
        _kernels = new KernelCache(this, instance.Options.PipelineCacheDirectory);
        _staging = new StagingPool(this);
    }

    /// <summary>Opens the device chosen by <paramref name="options"/> (null: <see cref="VulkanOptions.FromEnvironment"/>).</summary>
    public static GpuDevice Create(VulkanOptions? options = null)
    {
        options ??= VulkanOptions.FromEnvironment();
        var instance = new VulkanInstance(options);
        try
        {
            var info = DeviceSelector.Choose(PhysicalDeviceInfo.Enumerate(instance), options.Device, options.DeviceSlot);
            return new GpuDevice(instance, info);
        }
        catch
        {
            instance.Dispose();
            throw;
        }
    }

    /// <summary>Every usable device and the index of the one <see cref="Create"/> would open.</summary>
    public static (IReadOnlyList<PhysicalDeviceInfo> Devices, int Chosen) ListDevices(VulkanOptions? options = null)
    {
        options ??= VulkanOptions.FromEnvironment();
        using var instance = new VulkanInstance(options with { Validation = false, SynchronizationValidation = false });
        var devices = PhysicalDeviceInfo.Enumerate(instance);
        return (devices, DeviceSelector.Choose(devices, options.Device, options.DeviceSlot).Index);
    }

    public Vk Api { get; }

    public Device Handle { get; }

    public Queue Queue { get; }

    public PhysicalDeviceInfo Info { get; }

    /// <summary>The features enabled on this device and its limits; kernels pick variants from it.</summary>
    public DeviceCapabilities Capabilities { get; }

    public MemoryAllocator Memory { get; }

    /// <summary>Validation messages (empty unless validation is on).</summary>
    public ValidationLog ValidationLog => _instance.Log;

    public bool ValidationEnabled => _instance.ValidationEnabled;

    public string Name => Info.Name;

    internal CommandPool CommandPool => _commandPool;

    /// <summary>Pipelines built so far on this device and the host time they took (first use of each kernel specialization).</summary>
    public PipelineBuilds PipelineBuilds => _kernels.Builds;

    /// <summary>Whether pipelines are built with their statistics captured (<see cref="VulkanOptions.PipelineStatistics"/> and a driver that offers them).</summary>
    public bool CapturesPipelineStatistics { get; }

    /// <summary>The driver's statistics of every kernel built so far, in build order (empty unless <see cref="CapturesPipelineStatistics"/>).</summary>
    public IReadOnlyList<KernelStatistics> KernelStatistics => _kernels.Statistics;

    /// <summary>Where built pipelines are kept between runs (null: not kept).</summary>
    public string? PipelineCacheDirectory => _instance.Options.PipelineCacheDirectory;

    internal bool PoisonNewBuffers => _instance.Options.PoisonNewBuffers;

    /// <summary>True when <paramref name="source"/> was compiled and this device has every feature it requires.</summary>
    public bool CanRun(KernelSource source) => source.WhyNotRunnable(Capabilities) is null;

    /// <summary>Gets (or builds and caches) the pipeline for a kernel with its typed specialization.</summary>
    public Kernel GetKernel<TSpec>(KernelSource<TSpec> source, TSpec specialization)
        where TSpec : struct, ISpecialization => GetKernel(source, specialization.Constants());

    /// <summary>Gets the pipeline of a kernel without specialization constants.</summary>
    public Kernel GetKernel(KernelSource<NoSpecialization> source) => GetKernel(source, []);

    /// <summary>The same with positional constants: for the runtime's own kernels and tests, not for ops.</summary>
    internal Kernel GetKernel(KernelSource source, ReadOnlySpan<uint> specialization = default)
    {
        ThrowIfUnusable();
        if (source.Requires != ShaderFeatures.None && source.WhyNotRunnable(Capabilities) is { } why)
        {
            throw new MissingFeatureException($"{why} ({Name}).");
        }

        return _kernels.Get(source, specialization);
    }

    /// <summary>
    /// Starts recording a batch of transfers and dispatches that are submitted together; <paramref name="label"/>
    /// names it in a <see cref="Timeline"/>.
    /// </summary>
    public CommandStream BeginStream(string? label = null)
    {
        ThrowIfUnusable();
        return new CommandStream(this, label ?? "stream");
    }

    /// <summary>
    /// While set, every stream begun records its span on the device's clock (two timestamps a stream) into this
    /// timeline when the host waits for it (<see cref="CommandStream.Wait"/>, <see cref="CommandStream.Submit"/>); a
    /// stream only disposed adds nothing. Null (the default) records nothing. Needs timestamps on the compute queue.
    /// </summary>
    public StreamTimeline? Timeline
    {
        get => _timeline;
        set
        {
            if (value is not null && !Capabilities.Timestamps)
            {
                throw new MissingFeatureException($"{Name} has no timestamp support on its compute queue: no stream timeline.");
            }

            _timeline = value;
        }
    }

    private StreamTimeline? _timeline;

    /// <summary>
    /// Submits one recorded command buffer with a fence of its own and returns without waiting: the caller waits
    /// with <see cref="WaitFor"/>, which also destroys the fence.
    /// </summary>
    internal Fence Launch(CommandBuffer cmd, CommandStream stream)
    {
        ThrowIfUnusable();
        var fenceInfo = new FenceCreateInfo { SType = StructureType.FenceCreateInfo };
        Api.CreateFence(Handle, in fenceInfo, null, out var fence).Check("vkCreateFence");
        try
        {
            var submit = new SubmitInfo { SType = StructureType.SubmitInfo, CommandBufferCount = 1, PCommandBuffers = &cmd };
            lock (_queueLock)
            {
                Guard(Api.QueueSubmit(Queue, 1, in submit, fence), "vkQueueSubmit");
                _launched.Add(stream);
            }
        }
        catch
        {
            Api.DestroyFence(Handle, fence, null);
            throw;
        }

        return fence;
    }

    /// <summary>Waits for a fence from <see cref="Launch"/> (a hang becomes <see cref="DeviceLostException"/>) and destroys it.</summary>
    internal void WaitFor(Fence fence, CommandStream stream)
    {
        try
        {
            var timeout = (ulong)_instance.Options.SubmitTimeout.Ticks * 100;
            var r = Api.WaitForFences(Handle, 1, in fence, true, timeout);
            if (r == Result.Timeout)
            {
                _lost = true;
                throw new DeviceLostException(
                    $"A submission did not finish within {_instance.Options.SubmitTimeout}; the device is treated as hung.");
            }

            Guard(r, "vkWaitForFences");
        }
        finally
        {
            Api.DestroyFence(Handle, fence, null);
            lock (_queueLock)
            {
                _launched.Remove(stream);
            }
        }
    }

    /// <summary>
    /// Waits for the streams launched and not yet waited for that use <paramref name="buffer"/>: the host is about to
    /// touch its mapped memory, which they may still read or write. Streams that do not touch it run on, so a host
    /// can fill the next step's inputs, or read this step's loss, while a later stage of the step still runs.
    /// </summary>
    internal void WaitForLaunched(GpuBuffer buffer)
    {
        while (true)
        {
            CommandStream? next;
            lock (_queueLock)
            {
                next = _launched.Find(s => s.Uses(buffer));
            }

            if (next is null)
            {
                return;
            }

            next.Complete();
        }
    }

    internal void Adopt(IDisposable child)
    {
        lock (_children)
        {
            _children.Add(child);
        }
    }

    internal void Release(IDisposable child)
    {
        lock (_children)
        {
            _children.Remove(child);
        }
    }

    /// <summary>Checks a result, remembering device loss so later calls fail fast.</summary>
    internal void Guard(Result result, string call)
    {
        if (result == Result.ErrorDeviceLost)
        {
            _lost = true;
        }

        result.Check(call);
    }

    internal void ThrowIfUnusable()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_lost)
        {
            throw new DeviceLostException($"{Name} was lost earlier; dispose this GpuDevice and open a new one.");
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        if (!_lost)
        {
            Api.DeviceWaitIdle(Handle);
        }

        // Buffers and streams the caller did not dispose are freed here, so nothing outlives the device.
        IDisposable[] children;
        lock (_children)
        {
            children = [.. _children];
        }

        foreach (var child in children)
        {
            child.Dispose();
        }

        _disposed = true;
        _staging.Dispose();
        _kernels.Dispose();
        Memory.Dispose();
        Api.DestroyCommandPool(Handle, _commandPool, null);
        _commandPool = default;
        Api.DestroyDevice(Handle, null);
        _instance.Dispose();
    }

    private static (List<string> Extensions, DeviceCapabilities Enabled) ChooseExtensions(PhysicalDeviceInfo info)
    {
        var ext = new List<string>();
        var caps = info.Capabilities;
        void Use(string name)
        {
            if (info.Extensions.Contains(name))
            {
                ext.Add(name);
            }
        }

        // Only what some shader uses: no kernel needs float atomics, buffer addresses, timeline semaphores or the
        // pre-KHR NV cooperative matrices, so they stay off (Capabilities says false for them).
        Use("VK_KHR_portability_subset");
        Use("VK_KHR_shader_bfloat16");
        if (info.ApiVersion < Vk.Version13)
        {
            Use("VK_EXT_subgroup_size_control");
        }

        if (caps.CooperativeMatrixKhr)
        {
            Use("VK_KHR_cooperative_matrix");
            Use("VK_NV_cooperative_matrix2");
        }

        var enabled = caps with
        {
            CooperativeMatrixNv = false,
            CooperativeMatrix2Nv = caps.CooperativeMatrix2Nv && caps.CooperativeMatrixKhr,
            ShaderFloat32AtomicAdd = false,
            BufferDeviceAddress = false,
            TimelineSemaphore = false,
        };
        return (ext, enabled);
    }

    private Device CreateLogicalDevice(List<string> extensions)
    {
        var caps = Capabilities;
        var f11 = new PhysicalDeviceVulkan11Features
        {
            SType = StructureType.PhysicalDeviceVulkan11Features,
            StorageBuffer16BitAccess = caps.Storage16Bit,
        };
        var f12 = new PhysicalDeviceVulkan12Features
        {
            SType = StructureType.PhysicalDeviceVulkan12Features,
            PNext = &f11,
            ShaderFloat16 = caps.Float16,
            VulkanMemoryModel = caps.VulkanMemoryModel,
            VulkanMemoryModelDeviceScope = caps.VulkanMemoryModel,
        };
        var f13 = new PhysicalDeviceVulkan13Features
        {
            SType = StructureType.PhysicalDeviceVulkan13Features,
            PNext = &f12,
            SubgroupSizeControl = caps.SubgroupSizeControl,
            ComputeFullSubgroups = caps.ComputeFullSubgroups,
            Maintenance4 = caps.Maintenance4,
        };
        var coopKhr = new PhysicalDeviceCooperativeMatrixFeaturesKHR
        {
            SType = StructureType.PhysicalDeviceCooperativeMatrixFeaturesKhr,
            CooperativeMatrix = true,
        };
        var coop2 = new PhysicalDeviceCooperativeMatrix2FeaturesNV { SType = StructureType.PhysicalDeviceCooperativeMatrix2FeaturesNV };
        var bf16 = new PhysicalDeviceShaderBfloat16FeaturesKHR
        {
            SType = StructureType.PhysicalDeviceShaderBfloat16FeaturesKhr,
            ShaderBFloat16Type = true,
            ShaderBFloat16CooperativeMatrix = caps.Bfloat16CooperativeMatrix && caps.CooperativeMatrixKhr,
        };
        void* chain = Info.ApiVersion >= Vk.Version13 ? &f13 : &f12;
        if (caps.CooperativeMatrixKhr)
        {
            coopKhr.PNext = chain;
            chain = &coopKhr;
        }

        if (caps.CooperativeMatrix2Nv)
        {
            // Enable every coopmat2 capability the driver reports.
            var query = new PhysicalDeviceFeatures2 { SType = StructureType.PhysicalDeviceFeatures2, PNext = &coop2 };
            Api.GetPhysicalDeviceFeatures2(Info.Handle, &query);
            coop2.PNext = chain;
            chain = &coop2;
        }

        if (caps.Bfloat16 && extensions.Contains("VK_KHR_shader_bfloat16"))
        {
            bf16.PNext = chain;
            chain = &bf16;
        }

        var executables = new PhysicalDevicePipelineExecutablePropertiesFeaturesKHR
        {
            SType = StructureType.PhysicalDevicePipelineExecutablePropertiesFeaturesKhr,
            PipelineExecutableInfo = true,
        };
        if (CapturesPipelineStatistics)
        {
            executables.PNext = chain;
            chain = &executables;
        }

        var features = new PhysicalDeviceFeatures2 { SType = StructureType.PhysicalDeviceFeatures2, PNext = chain };
        features.Features.ShaderInt16 = caps.Int16;
        var priority = 1.0f;
        var queueInfo = new DeviceQueueCreateInfo
        {
            SType = StructureType.DeviceQueueCreateInfo,
            QueueFamilyIndex = (uint)Info.ComputeQueueFamily,
            QueueCount = 1,
            PQueuePriorities = &priority,
        };
        var names = SilkMarshal.StringArrayToPtr(extensions);
        try
        {
            var info = new DeviceCreateInfo
            {
                SType = StructureType.DeviceCreateInfo,
                PNext = &features,
                QueueCreateInfoCount = 1,
                PQueueCreateInfos = &queueInfo,
                EnabledExtensionCount = (uint)extensions.Count,
                PpEnabledExtensionNames = (byte**)names,
            };
            Api.CreateDevice(Info.Handle, in info, null, out var device).Check($"vkCreateDevice({Info.Name})");
            return device;
        }
        finally
        {
            SilkMarshal.Free(names);
        }
    }
}
