using Silk.NET.Core.Native;
using Silk.NET.Vulkan;

namespace Mamba2.Vulkan;

/// <summary>A memory heap: size and whether it is device-local.</summary>
public sealed record MemoryHeapInfo(ulong SizeBytes, bool DeviceLocal);

/// <summary>Everything <c>mamba2 devices</c> prints about one physical device, plus what opening it needs.</summary>
public sealed unsafe record PhysicalDeviceInfo
{
    public required int Index { get; init; }
    public required PhysicalDevice Handle { get; init; }
    public required string Name { get; init; }
    public required PhysicalDeviceType Type { get; init; }
    public required uint VendorId { get; init; }
    public required uint DeviceId { get; init; }
    public required string DriverName { get; init; }
    public required string DriverInfo { get; init; }
    public required uint DriverVersion { get; init; }
    public required uint ApiVersion { get; init; }
    public required IReadOnlyList<MemoryHeapInfo> Heaps { get; init; }
    public required IReadOnlySet<string> Extensions { get; init; }
    public required int ComputeQueueFamily { get; init; }
    public required uint TimestampValidBits { get; init; }
    public required string PipelineCacheUuid { get; init; }

    /// <summary>What the device supports (all of it is enabled when the device is opened).</summary>
    public required DeviceCapabilities Capabilities { get; init; }

    /// <summary>A CPU implementation (lavapipe, SwiftShader): kernels built for GPUs may want another form there.</summary>
    public bool IsCpu => Type == PhysicalDeviceType.Cpu;

    public string TypeName => Type switch
    {
        PhysicalDeviceType.DiscreteGpu => "discrete GPU",
        PhysicalDeviceType.IntegratedGpu => "integrated GPU",
        PhysicalDeviceType.VirtualGpu => "virtual GPU",
        PhysicalDeviceType.Cpu => "CPU",
        _ => "other",
    };

    public string VendorName => VendorId switch
    {
        0x10DE => "NVIDIA",
        0x1002 => "AMD",
        0x8086 => "Intel",
        0x13B5 => "ARM",
        0x5143 => "Qualcomm",
        0x106B => "Apple",
        0x10005 => "Mesa",
        _ => $"0x{VendorId:X4}",
    };

    public ulong DeviceLocalBytes => Heaps.Where(h => h.DeviceLocal).Select(h => h.SizeBytes).DefaultIfEmpty(0UL).Max();

    public static IReadOnlyList<PhysicalDeviceInfo> Enumerate(VulkanInstance instance)
    {
        var list = new List<PhysicalDeviceInfo>();
        var handles = instance.EnumeratePhysicalDevices();
        for (var i = 0; i < handles.Count; i++)
        {
            var info = Query(instance, handles[i], i);
            if (info is not null)
            {
                list.Add(info);
            }
        }

        return list;
    }

    /// <summary>Null for devices this runtime cannot use (below Vulkan 1.2 or without a compute queue).</summary>
    private static PhysicalDeviceInfo? Query(VulkanInstance instance, PhysicalDevice pd, int index)
    {
        var vk = instance.Api;
        var extensions = DeviceExtensions(vk, pd);
        extensions.RemoveWhere(e => !instance.LayerUnderstands(e));
        var basic = vk.GetPhysicalDeviceProperties(pd);
        if (basic.ApiVersion < Vk.Version12)
        {
            return null;
        }

        var family = FindComputeQueueFamily(vk, pd, out var timestampBits);
        if (family < 0)
        {
            return null;
        }

        var subgroup = new PhysicalDeviceSubgroupProperties { SType = StructureType.PhysicalDeviceSubgroupProperties };
        var maint3 = new PhysicalDeviceMaintenance3Properties { SType = StructureType.PhysicalDeviceMaintenance3Properties, PNext = &subgroup };
        var driver = new PhysicalDeviceDriverProperties { SType = StructureType.PhysicalDeviceDriverProperties, PNext = &maint3 };
        var sizeControl = new PhysicalDeviceSubgroupSizeControlProperties { SType = StructureType.PhysicalDeviceSubgroupSizeControlProperties, PNext = &driver };
        var hasSizeControl = basic.ApiVersion >= Vk.Version13 || extensions.Contains("VK_EXT_subgroup_size_control");
        var coop2Props = new PhysicalDeviceCooperativeMatrix2PropertiesNV
        {
            SType = StructureType.PhysicalDeviceCooperativeMatrix2PropertiesNV,
            PNext = hasSizeControl ? &sizeControl : &driver,
        };
        var hasCoop2 = extensions.Contains("VK_NV_cooperative_matrix2");
        var props = new PhysicalDeviceProperties2
        {
            SType = StructureType.PhysicalDeviceProperties2,
            PNext = hasCoop2 ? &coop2Props : hasSizeControl ? &sizeControl : &driver,
        };
        vk.GetPhysicalDeviceProperties2(pd, &props);
        var limits = props.Properties.Limits;

        var f11 = new PhysicalDeviceVulkan11Features { SType = StructureType.PhysicalDeviceVulkan11Features };
        var f12 = new PhysicalDeviceVulkan12Features { SType = StructureType.PhysicalDeviceVulkan12Features, PNext = &f11 };
        var f13 = new PhysicalDeviceVulkan13Features { SType = StructureType.PhysicalDeviceVulkan13Features, PNext = &f12 };
        var coopKhr = new PhysicalDeviceCooperativeMatrixFeaturesKHR { SType = StructureType.PhysicalDeviceCooperativeMatrixFeaturesKhr };
        var coopNv = new PhysicalDeviceCooperativeMatrixFeaturesNV { SType = StructureType.PhysicalDeviceCooperativeMatrixFeaturesNV };
        var coop2Nv = new PhysicalDeviceCooperativeMatrix2FeaturesNV { SType = StructureType.PhysicalDeviceCooperativeMatrix2FeaturesNV };
        var atomicF = new PhysicalDeviceShaderAtomicFloatFeaturesEXT { SType = StructureType.PhysicalDeviceShaderAtomicFloatFeaturesExt };
        var bf16 = new PhysicalDeviceShaderBfloat16FeaturesKHR { SType = StructureType.PhysicalDeviceShaderBfloat16FeaturesKhr };
        void* chain = basic.ApiVersion >= Vk.Version13 ? &f13 : &f12;
        if (extensions.Contains("VK_KHR_cooperative_matrix"))
        {
            coopKhr.PNext = chain;
            chain = &coopKhr;
        }

        if (extensions.Contains("VK_NV_cooperative_matrix"))
        {
            coopNv.PNext = chain;
            chain = &coopNv;
        }

        if (extensions.Contains("VK_NV_cooperative_matrix2"))
        {
            coop2Nv.PNext = chain;
            chain = &coop2Nv;
        }

        if (extensions.Contains("VK_EXT_shader_atomic_float"))
        {
            atomicF.PNext = chain;
            chain = &atomicF;
        }

        if (extensions.Contains("VK_KHR_shader_bfloat16"))
        {
            bf16.PNext = chain;
            chain = &bf16;
        }

        var features = new PhysicalDeviceFeatures2 { SType = StructureType.PhysicalDeviceFeatures2, PNext = chain };
        vk.GetPhysicalDeviceFeatures2(pd, &features);

        var memory = vk.GetPhysicalDeviceMemoryProperties(pd);
        var heaps = new List<MemoryHeapInfo>();
        for (var h = 0; h < memory.MemoryHeapCount; h++)
        {
            var heap = memory.MemoryHeaps[h];
            heaps.Add(new MemoryHeapInfo(heap.Size, heap.Flags.HasFlag(MemoryHeapFlags.DeviceLocalBit)));
        }

        var coopShapes = coopKhr.CooperativeMatrix == true ? CooperativeMatrixShapes(instance, pd) : [];
        var coop2 = hasCoop2 && coop2Nv.CooperativeMatrixFlexibleDimensions
            ? new CooperativeMatrix2Limits(coop2Props.CooperativeMatrixWorkgroupScopeMaxWorkgroupSize,
                coop2Props.CooperativeMatrixFlexibleDimensionsMaxDimension,
                coop2Props.CooperativeMatrixWorkgroupScopeReservedSharedMemory,
                coop2Nv.CooperativeMatrixWorkgroupScope ? FlexibleShapes(instance, pd) : [])
            : null;
        var caps = new DeviceCapabilities
        {
            SubgroupSize = subgroup.SubgroupSize,
            MinSubgroupSize = hasSizeControl ? sizeControl.MinSubgroupSize : subgroup.SubgroupSize,
            MaxSubgroupSize = hasSizeControl ? sizeControl.MaxSubgroupSize : subgroup.SubgroupSize,
            MaxSharedMemoryBytes = limits.MaxComputeSharedMemorySize,
            MaxWorkgroupInvocations = limits.MaxComputeWorkGroupInvocations,
            MaxWorkgroupSize = (limits.MaxComputeWorkGroupSize[0], limits.MaxComputeWorkGroupSize[1], limits.MaxComputeWorkGroupSize[2]),
            MaxWorkgroupCount = (limits.MaxComputeWorkGroupCount[0], limits.MaxComputeWorkGroupCount[1], limits.MaxComputeWorkGroupCount[2]),
            MaxStorageBufferRange = limits.MaxStorageBufferRange,
            MaxAllocationBytes = maint3.MaxMemoryAllocationSize,
            MinStorageBufferOffsetAlignment = limits.MinStorageBufferOffsetAlignment,
            MaxPushConstantsBytes = limits.MaxPushConstantsSize,
            TimestampPeriodNs = limits.TimestampPeriod,
            Timestamps = timestampBits > 0,
            Float16 = f12.ShaderFloat16,
            Int16 = features.Features.ShaderInt16,
            Storage16Bit = f11.StorageBuffer16BitAccess,
            SubgroupSizeControl = basic.ApiVersion >= Vk.Version13 && f13.SubgroupSizeControl,
            ComputeFullSubgroups = basic.ApiVersion >= Vk.Version13 && f13.ComputeFullSubgroups,
            RequiredSubgroupSizeCompute = hasSizeControl && (sizeControl.RequiredSubgroupSizeStages & ShaderStageFlags.ComputeBit) != 0,
            MaxComputeWorkgroupSubgroups = hasSizeControl ? sizeControl.MaxComputeWorkgroupSubgroups : 0,
            Maintenance4 = basic.ApiVersion >= Vk.Version13 && f13.Maintenance4,
            CooperativeMatrixKhr = coopKhr.CooperativeMatrix,
            CooperativeMatrixNv = coopNv.CooperativeMatrix,
            CooperativeMatrix2Nv = coop2Nv.CooperativeMatrixWorkgroupScope || coop2Nv.CooperativeMatrixFlexibleDimensions,
            TimelineSemaphore = f12.TimelineSemaphore,
            BufferDeviceAddress = f12.BufferDeviceAddress,
            ShaderFloat32AtomicAdd = atomicF.ShaderBufferFloat32AtomicAdd,
            Bfloat16 = bf16.ShaderBFloat16Type,
            Bfloat16CooperativeMatrix = bf16.ShaderBFloat16CooperativeMatrix,
            VulkanMemoryModel = f12.VulkanMemoryModel && f12.VulkanMemoryModelDeviceScope,
            CooperativeMatrixShapes = coopShapes,
            CooperativeMatrixUnusable = CooperativeMatrixFault.Of(driver.DriverID, subgroup.SubgroupSize, coopShapes),
            CooperativeMatrix2 = coop2,
        };

        return new PhysicalDeviceInfo
        {
            Index = index,
            Handle = pd,
            Name = SilkMarshal.PtrToString((nint)props.Properties.DeviceName) ?? "?",
            Type = props.Properties.DeviceType,
            VendorId = props.Properties.VendorID,
            DeviceId = props.Properties.DeviceID,
            DriverName = SilkMarshal.PtrToString((nint)driver.DriverName) ?? "?",
            DriverInfo = SilkMarshal.PtrToString((nint)driver.DriverInfo) ?? "",
            DriverVersion = props.Properties.DriverVersion,
            ApiVersion = props.Properties.ApiVersion,
            Heaps = heaps,
            Extensions = extensions,
            ComputeQueueFamily = family,
            TimestampValidBits = timestampBits,
            PipelineCacheUuid = Convert.ToHexString(new ReadOnlySpan<byte>(props.Properties.PipelineCacheUuid, 16)),
            Capabilities = caps,
        };
    }

    private static HashSet<string> DeviceExtensions(Vk vk, PhysicalDevice pd)
    {
        uint count = 0;
        vk.EnumerateDeviceExtensionProperties(pd, (byte*)null, ref count, null).Check("vkEnumerateDeviceExtensionProperties");
        var props = new ExtensionProperties[count];
        fixed (ExtensionProperties* p = props)
        {
            vk.EnumerateDeviceExtensionProperties(pd, (byte*)null, ref count, p).Check("vkEnumerateDeviceExtensionProperties");
        }

        var set = new HashSet<string>();
        foreach (var e in props)
        {
            set.Add(SilkMarshal.PtrToString((nint)e.ExtensionName)!);
        }

        return set;
    }

    /// <summary>Prefers a family with compute and graphics (the universal queue, full timestamp support), else compute only.</summary>
    private static int FindComputeQueueFamily(Vk vk, PhysicalDevice pd, out uint timestampBits)
    {
        uint count = 0;
        vk.GetPhysicalDeviceQueueFamilyProperties(pd, ref count, null);
        var families = new QueueFamilyProperties[count];
        fixed (QueueFamilyProperties* p = families)
        {
            vk.GetPhysicalDeviceQueueFamilyProperties(pd, ref count, p);
        }

        var best = -1;
        timestampBits = 0;
        for (var i = 0; i < families.Length; i++)
        {
            var f = families[i].QueueFlags;
            if (!f.HasFlag(QueueFlags.ComputeBit))
            {
                continue;
            }

            if (best < 0 || (f.HasFlag(QueueFlags.GraphicsBit) && !families[best].QueueFlags.HasFlag(QueueFlags.GraphicsBit)))
            {
                best = i;
            }
        }

        if (best >= 0)
        {
            timestampBits = families[best].TimestampValidBits;
        }

        return best;
    }

    private static IReadOnlyList<CooperativeMatrixShape> CooperativeMatrixShapes(VulkanInstance instance, PhysicalDevice pd)
    {
        const string name = "vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR";
        var props = QueryList(pd, (delegate* unmanaged<PhysicalDevice, uint*, CooperativeMatrixPropertiesKHR*, Result>)instance.GetProcAddress(name),
            new CooperativeMatrixPropertiesKHR { SType = StructureType.CooperativeMatrixPropertiesKhr }, name);
        return props.Select(p => new CooperativeMatrixShape(p.MSize, p.NSize, p.KSize,
            CooperativeMatrixShape.ComponentName((int)p.AType), CooperativeMatrixShape.ComponentName((int)p.BType),
            CooperativeMatrixShape.ComponentName((int)p.CType), CooperativeMatrixShape.ComponentName((int)p.ResultType))).ToList();
    }

    /// <summary>VK_NV_cooperative_matrix2's flexible workgroup-scope shapes.</summary>
    private static IReadOnlyList<CooperativeMatrixFlexibleShape> FlexibleShapes(VulkanInstance instance, PhysicalDevice pd)
    {
        const string name = "vkGetPhysicalDeviceCooperativeMatrixFlexibleDimensionsPropertiesNV";
        var props = QueryList(pd, (delegate* unmanaged<PhysicalDevice, uint*, CooperativeMatrixFlexibleDimensionsPropertiesNV*, Result>)instance.GetProcAddress(name),
            new CooperativeMatrixFlexibleDimensionsPropertiesNV { SType = StructureType.CooperativeMatrixFlexibleDimensionsPropertiesNV }, name);
        const int workgroupScope = 2;  // VK_SCOPE_WORKGROUP_KHR
        return props.Where(p => (int)p.Scope == workgroupScope && !p.SaturatingAccumulation)
            .Select(p => new CooperativeMatrixFlexibleShape(p.MGranularity, p.NGranularity, p.KGranularity,
                CooperativeMatrixShape.ComponentName((int)p.AType), CooperativeMatrixShape.ComponentName((int)p.BType),
                CooperativeMatrixShape.ComponentName((int)p.CType), CooperativeMatrixShape.ComponentName((int)p.ResultType),
                p.WorkgroupInvocations)).ToList();
    }

    /// <summary>The two-call enumeration of a properties list, each element initialized as <paramref name="blank"/> (its sType).</summary>
    private static T[] QueryList<T>(PhysicalDevice pd, delegate* unmanaged<PhysicalDevice, uint*, T*, Result> fn, T blank, string name)
        where T : unmanaged
    {
        uint count = 0;
        fn(pd, &count, null).Check(name);
        var props = Enumerable.Repeat(blank, (int)count).ToArray();
        fixed (T* p = props)
        {
            fn(pd, &count, p).Check(name);
        }

        return props.Take((int)count).ToArray();
    }
}
