namespace Mamba2.Vulkan;

/// <summary>
/// What a device can do, as the kernels need it to pick variants and tile sizes. Enabled features only: a feature
/// listed here was both supported and turned on when the device was opened.
/// </summary>
public sealed record DeviceCapabilities
{
    public required uint SubgroupSize { get; init; }
    public uint MinSubgroupSize { get; init; }
    public uint MaxSubgroupSize { get; init; }
    public required uint MaxSharedMemoryBytes { get; init; }
    public required uint MaxWorkgroupInvocations { get; init; }
    public required (uint X, uint Y, uint Z) MaxWorkgroupSize { get; init; }

    /// <summary>The most invocations a workgroup laid out along x alone may have: both limits hold it.</summary>
    public uint MaxWorkgroupInvocationsX => Math.Min(MaxWorkgroupInvocations, MaxWorkgroupSize.X);
    public required (uint X, uint Y, uint Z) MaxWorkgroupCount { get; init; }
    public required ulong MaxStorageBufferRange { get; init; }
    public required ulong MaxAllocationBytes { get; init; }
    public required ulong MinStorageBufferOffsetAlignment { get; init; }
    public required uint MaxPushConstantsBytes { get; init; }
    public required float TimestampPeriodNs { get; init; }
    public required bool Timestamps { get; init; }
    public bool Float16 { get; init; }

    /// <summary>16-bit integers in shaders (the bf16 kernels round by hand through them).</summary>
    public bool Int16 { get; init; }
    public bool Storage16Bit { get; init; }
    public bool SubgroupSizeControl { get; init; }
    public bool ComputeFullSubgroups { get; init; }

    /// <summary>A compute pipeline may require a subgroup size (requiredSubgroupSizeStages has the compute stage).</summary>
    public bool RequiredSubgroupSizeCompute { get; init; }

    /// <summary>At most this many subgroups a workgroup when a pipeline requires a subgroup size.</summary>
    public uint MaxComputeWorkgroupSubgroups { get; init; }

    /// <summary>Vulkan 1.3's maintenance4, needed by SPIR-V 1.6 shaders whose workgroup size is a specialization constant.</summary>
    public bool Maintenance4 { get; init; }
    public bool CooperativeMatrixKhr { get; init; }
    public bool CooperativeMatrixNv { get; init; }
    public bool CooperativeMatrix2Nv { get; init; }
    public bool TimelineSemaphore { get; init; }
    public bool BufferDeviceAddress { get; init; }
    public bool ShaderFloat32AtomicAdd { get; init; }
    public bool Bfloat16 { get; init; }

    /// <summary>bf16 cooperative matrices (VK_KHR_shader_bfloat16's shaderBFloat16CooperativeMatrix).</summary>
    public bool Bfloat16CooperativeMatrix { get; init; }

    /// <summary>The Vulkan memory model (and its device scope), which cooperative-matrix SPIR-V declares.</summary>
    public bool VulkanMemoryModel { get; init; }

    /// <summary>Workgroup-scope matrices of VK_NV_cooperative_matrix2, with flexible dimensions.</summary>
    public CooperativeMatrix2Limits? CooperativeMatrix2 { get; init; }

    /// <summary>
    /// The tensor-core kernels (SPIR-V 1.6) run in the subgroups the host sized them for: the device has one subgroup
    /// size, or a pipeline can require it and full subgroups (<see cref="SubgroupPinning"/>). Without that the driver
    /// may pick another size, and those kernels are not offered.
    /// </summary>
    public bool SubgroupLayoutHolds => MinSubgroupSize == MaxSubgroupSize
        || (SubgroupSizeControl && RequiredSubgroupSizeCompute && ComputeFullSubgroups && SubgroupSize >= MinSubgroupSize && SubgroupSize <= MaxSubgroupSize);

    /// <summary>
    /// Why this driver's cooperative matrices are not used although it lists them (a known fault of the driver in this
    /// configuration), or null: see <see cref="CooperativeMatrixFault"/>.
    /// </summary>
    public string? CooperativeMatrixUnusable { get; init; }

    /// <summary>The tensor-core features a kernel may use here (<see cref="ShaderFeatures"/>).</summary>
    public ShaderFeatures ShaderFeatures => !SubgroupLayoutHolds ? 0 :
        (CooperativeMatrixKhr && VulkanMemoryModel && Maintenance4 && CooperativeMatrixShapes.Count > 0 && CooperativeMatrixUnusable is null ? ShaderFeatures.KhrCooperativeMatrix : 0)
        | (CooperativeMatrixKhr && CooperativeMatrix2Nv && CooperativeMatrix2 is { } l && l.FlexibleShapes.Count > 0 ? ShaderFeatures.NvCooperativeMatrix2 : 0)
        | (Bfloat16 && Bfloat16CooperativeMatrix && Int16 ? ShaderFeatures.Bfloat16 : 0);

    public bool Supports(ShaderFeatures features) => (ShaderFeatures & features) == features;

    /// <summary>Shapes the device's cooperative-matrix unit supports (VK_KHR_cooperative_matrix).</summary>
    public IReadOnlyList<CooperativeMatrixShape> CooperativeMatrixShapes { get; init; } = [];
}

/// <summary>
/// VK_NV_cooperative_matrix2's workgroup-scope limits: the largest workgroup, the largest dimension, the shared
/// memory the driver reserves, and the flexible shapes (M, N, K are multiples of these granularities, for the
/// workgroup size listed with each).
/// </summary>
public sealed record CooperativeMatrix2Limits(uint MaxWorkgroupSize, uint MaxDimension, uint ReservedSharedMemory,
    IReadOnlyList<CooperativeMatrixFlexibleShape> FlexibleShapes);

/// <summary>One flexible-dimensions entry: granularities, types, scope workgroup, and the invocations it needs.</summary>
public sealed record CooperativeMatrixFlexibleShape(uint MGranularity, uint NGranularity, uint KGranularity,
    string AType, string BType, string CType, string ResultType, uint WorkgroupInvocations)
{
    public override string ToString() =>
        $"{MGranularity}x{NGranularity}x{KGranularity}*k {AType}*{BType}+{CType}->{ResultType} ({WorkgroupInvocations} invocations)";
}

/// <summary>One MxNxK shape with operand and accumulator types, e.g. 16x16x16 f16*f16+f32.</summary>
public sealed record CooperativeMatrixShape(uint M, uint N, uint K, string AType, string BType, string CType, string ResultType)
{
    public override string ToString() => $"{M}x{N}x{K} {AType}*{BType}+{CType}->{ResultType}";

    /// <summary>VkComponentTypeKHR by value (Silk.NET's enum has duplicate names).</summary>
    public static string ComponentName(int value) => value switch
    {
        0 => "f16",
        1 => "f32",
        2 => "f64",
        3 => "i8",
        4 => "i16",
        5 => "i32",
        6 => "i64",
        7 => "u8",
        8 => "u16",
        9 => "u32",
        10 => "u64",
        1000141000 => "bf16",
        1000491000 => "i8packed",
        1000491001 => "u8packed",
        1000491002 => "e4m3",
        1000491003 => "e5m2",
        _ => $"type{value}",
    };
}
