using System.Reflection;
using Silk.NET.Vulkan;

namespace Mamba2.Vulkan;

/// <summary>How a kernel touches one storage-buffer binding; the command stream derives barriers from it.</summary>
public enum BufferAccess
{
    Read,
    Write,
    ReadWrite,
}

/// <summary>
/// A compute shader's SPIR-V (an embedded resource) and its interface: one storage buffer per binding in set 0,
/// numbered 0..n-1, and a push-constant block. The interface is read from the SPIR-V (<see cref="SpirvLayout"/>:
/// readonly / writeonly qualifiers give each binding's access, the block's members its size), so registering a
/// kernel is its resource name; a declared interface (the four-argument constructor) is checked against it when
/// the pipeline is built. A tensor-core variant names the <see cref="Requires"/> features: the build compiles it
/// only when the compiler has them (<see cref="IsCompiled"/>), and it runs only on a device that has them
/// (<see cref="GpuDevice.CanRun"/>).
/// </summary>
public class KernelSource
{
    private readonly IReadOnlyList<BufferAccess>? _declaredBindings;
    private readonly int? _declaredPush;
    private SpirvLayout? _layout;
    private bool? _compiled;
    private string? _cacheKey;

    public KernelSource(Assembly assembly, string resourceName, ShaderFeatures requires = ShaderFeatures.None)
    {
        Assembly = assembly;
        ResourceName = resourceName;
        Requires = requires;
    }

    /// <summary>A kernel whose interface is declared by hand (checked against its SPIR-V when built).</summary>
    public KernelSource(Assembly assembly, string resourceName, IReadOnlyList<BufferAccess> bindings, int pushConstantBytes)
        : this(assembly, resourceName)
    {
        _declaredBindings = bindings;
        _declaredPush = pushConstantBytes;
    }

    public Assembly Assembly { get; }

    public string ResourceName { get; }

    public string Name => Path.GetFileNameWithoutExtension(ResourceName);

    public ShaderFeatures Requires { get; }

    /// <summary>False when the shader build left this variant out (its compiler lacked a feature).</summary>
    public bool IsCompiled => _compiled ??= Assembly.GetManifestResourceInfo(ResourceName) is not null;

    /// <summary>Null when this kernel was compiled and <paramref name="caps"/> has every feature it requires; else why not.</summary>
    public string? WhyNotRunnable(DeviceCapabilities caps)
    {
        if (!IsCompiled)
        {
            return $"{Name} was not compiled: the shader compiler lacked {ShaderBuild.Describe(Requires & ~ShaderBuild.Of(Assembly).Features)} (run build/fetch-shader-compiler.sh and rebuild)";
        }

        var missing = Requires & ~caps.ShaderFeatures;
        if (missing == ShaderFeatures.None)
        {
            return null;
        }

        if (!caps.SubgroupLayoutHolds)
        {
            return $"{Name} runs in subgroups of the size it was sized for; the device picks {caps.MinSubgroupSize}..{caps.MaxSubgroupSize} per pipeline and cannot be asked for one";
        }

        return missing.HasFlag(ShaderFeatures.KhrCooperativeMatrix) && caps.CooperativeMatrixUnusable is { } fault
            ? $"{Name} needs {ShaderBuild.Describe(missing)}, which the device lists but cannot run: {fault}"
            : $"{Name} needs {ShaderBuild.Describe(missing)}, which the device lacks";
    }

    /// <summary>The interface the SPIR-V states (read once).</summary>
    public SpirvLayout Layout => _layout ??= SpirvLayout.Read(Name, LoadSpirv());

    public IReadOnlyList<BufferAccess> Bindings => _declaredBindings ?? Layout.Bindings;

    public int PushConstantBytes => _declaredPush ?? Layout.PushConstantBytes;

    /// <summary>
    /// What tells this kernel's pipelines apart from another source's (made once): the declared interface is part of
    /// it, since the same SPIR-V declared differently must be checked again.
    /// </summary>
    internal string CacheKey => _cacheKey ??= $"{Assembly.FullName}|{ResourceName}|{string.Join(',', Bindings)}|{PushConstantBytes}";

    public override string ToString() => ResourceName;

    internal uint[] LoadSpirv()
    {
        using var stream = Assembly.GetManifestResourceStream(ResourceName)
            ?? throw new InvalidOperationException(
                $"SPIR-V resource '{ResourceName}' is not embedded in {Assembly.GetName().Name}; was the shader added to the project's <Shader> items?");
        var bytes = new byte[stream.Length];
        stream.ReadExactly(bytes);
        if (bytes.Length % 4 != 0 || bytes.Length < 20 || BitConverter.ToUInt32(bytes, 0) != 0x07230203)
        {
            throw new InvalidDataException($"'{ResourceName}' is not SPIR-V.");
        }

        var words = new uint[bytes.Length / 4];
        System.Buffer.BlockCopy(bytes, 0, words, 0, bytes.Length);
        return words;
    }
}

/// <summary>
/// A kernel's specialization constants as one typed record: the parameters of its primary constructor, in order,
/// are the shader's constant ids 0, 1, ... (the workgroup size's <c>local_size_x_id</c> is named Local). A test
/// compares the names with the GLSL's.
/// </summary>
public interface ISpecialization
{
    uint[] Constants();
}

/// <summary>For kernels that declare no specialization constants.</summary>
public readonly record struct NoSpecialization : ISpecialization
{
    public uint[] Constants() => [];
}

/// <summary>For kernels whose only specialization constant is the workgroup size.</summary>
public readonly record struct LocalSize(uint Local) : ISpecialization
{
    public uint[] Constants() => [Local];
}

/// <summary>A <see cref="KernelSource"/> whose specialization is the record <typeparamref name="TSpec"/>.</summary>
public sealed class KernelSource<TSpec> : KernelSource
    where TSpec : struct, ISpecialization
{
    public KernelSource(Assembly assembly, string resourceName, ShaderFeatures requires = ShaderFeatures.None)
        : base(assembly, resourceName, requires)
    {
    }
}

/// <summary>A built compute pipeline for one <see cref="KernelSource"/> and one set of specialization constants.</summary>
public sealed unsafe class Kernel : IDisposable
{
    private readonly GpuDevice _device;
    private readonly uint[] _specialization;

    internal Kernel(GpuDevice device, KernelSource source, uint[] specialization, PipelineCache cache)
    {
        _device = device;
        Source = source;
        _specialization = specialization;
        var spirv = source.LoadSpirv();
        SpirvInterface.Check(source, specialization.Length);
        if (source.PushConstantBytes > device.Capabilities.MaxPushConstantsBytes)
        {
            throw new MissingFeatureException(
                $"{source.Name} needs {source.PushConstantBytes} bytes of push constants; {device.Name} allows {device.Capabilities.MaxPushConstantsBytes}.");
        }

        var vk = device.Api;
        var bindings = stackalloc DescriptorSetLayoutBinding[source.Bindings.Count];
        for (var i = 0; i < source.Bindings.Count; i++)
        {
            bindings[i] = new DescriptorSetLayoutBinding
            {
                Binding = (uint)i,
                DescriptorType = DescriptorType.StorageBuffer,
                DescriptorCount = 1,
                StageFlags = ShaderStageFlags.ComputeBit,
            };
        }

        var setInfo = new DescriptorSetLayoutCreateInfo
        {
            SType = StructureType.DescriptorSetLayoutCreateInfo,
            BindingCount = (uint)source.Bindings.Count,
            PBindings = bindings,
        };
        device.Guard(vk.CreateDescriptorSetLayout(device.Handle, in setInfo, null, out var setLayout), "vkCreateDescriptorSetLayout");
        SetLayout = setLayout;

        var range = new PushConstantRange { StageFlags = ShaderStageFlags.ComputeBit, Offset = 0, Size = (uint)source.PushConstantBytes };
        var layoutInfo = new PipelineLayoutCreateInfo
        {
            SType = StructureType.PipelineLayoutCreateInfo,
            SetLayoutCount = 1,
            PSetLayouts = &setLayout,
            PushConstantRangeCount = source.PushConstantBytes > 0 ? 1u : 0u,
            PPushConstantRanges = &range,
        };
        device.Guard(vk.CreatePipelineLayout(device.Handle, in layoutInfo, null, out var layout), "vkCreatePipelineLayout");
        Layout = layout;

        ShaderModule module;
        fixed (uint* code = spirv)
        {
            var moduleInfo = new ShaderModuleCreateInfo
            {
                SType = StructureType.ShaderModuleCreateInfo,
                CodeSize = (nuint)(spirv.Length * 4),
                PCode = code,
            };
            device.Guard(vk.CreateShaderModule(device.Handle, in moduleInfo, null, out module), "vkCreateShaderModule");
        }

        try
        {
            var entries = stackalloc SpecializationMapEntry[Math.Max(1, specialization.Length)];
            for (var i = 0; i < specialization.Length; i++)
            {
                entries[i] = new SpecializationMapEntry { ConstantID = (uint)i, Offset = (uint)(i * 4), Size = 4 };
            }

            fixed (uint* data = specialization)
            {
                var spec = new SpecializationInfo
                {
                    MapEntryCount = (uint)specialization.Length,
                    PMapEntries = entries,
                    DataSize = (nuint)(specialization.Length * 4),
                    PData = data,
                };
                var main = stackalloc byte[] { (byte)'m', (byte)'a', (byte)'i', (byte)'n', 0 };
                Pinning = SubgroupPinning.For(device.Capabilities, source.Layout, source.Layout.WorkgroupSize(specialization));
                var required = new PipelineShaderStageRequiredSubgroupSizeCreateInfo
                {
                    SType = StructureType.PipelineShaderStageRequiredSubgroupSizeCreateInfo,
                    RequiredSubgroupSize = Pinning.RequiredSize,
                };
                var pipelineInfo = new ComputePipelineCreateInfo
                {
                    SType = StructureType.ComputePipelineCreateInfo,
                    Stage = new PipelineShaderStageCreateInfo
                    {
                        SType = StructureType.PipelineShaderStageCreateInfo,
                        Stage = ShaderStageFlags.ComputeBit,
                        PNext = Pinning.RequiredSize != 0 ? &required : null,
                        Flags = Pinning.FullSubgroups ? PipelineShaderStageCreateFlags.RequireFullSubgroupsBit : 0,
                        Module = module,
                        PName = main,
                        PSpecializationInfo = specialization.Length > 0 ? &spec : null,
                    },
                    Layout = layout,
                    Flags = device.CapturesPipelineStatistics ? PipelineCreateFlags.CreateCaptureStatisticsBitKhr : 0,
                };
                Pipeline pipeline;
                device.Guard(vk.CreateComputePipelines(device.Handle, cache, 1, &pipelineInfo, null, &pipeline),
                    $"vkCreateComputePipelines({source.Name})");
                Pipeline = pipeline;
            }
        }
        catch
        {
            vk.DestroyPipelineLayout(device.Handle, layout, null);
            vk.DestroyDescriptorSetLayout(device.Handle, setLayout, null);
            throw;
        }
        finally
        {
            vk.DestroyShaderModule(device.Handle, module, null);
        }
    }

    public KernelSource Source { get; }

    public IReadOnlyList<uint> Specialization => _specialization;

    /// <summary>The subgroup size this pipeline requires, if any, and whether its subgroups are full (<see cref="SubgroupPinning"/>).</summary>
    public SubgroupPinning Pinning { get; }

    /// <summary><see cref="Specialization"/> as a span (the kernel cache compares it on every lookup).</summary>
    internal ReadOnlySpan<uint> SpecializationSpan => _specialization;

    public Pipeline Pipeline { get; }

    public PipelineLayout Layout { get; }

    public DescriptorSetLayout SetLayout { get; }

    public void Dispose()
    {
        _device.Api.DestroyPipeline(_device.Handle, Pipeline, null);
        _device.Api.DestroyPipelineLayout(_device.Handle, Layout, null);
        _device.Api.DestroyDescriptorSetLayout(_device.Handle, SetLayout, null);
    }
}

/// <summary>Checks a kernel's declared interface and specialization against what its SPIR-V states.</summary>
internal static class SpirvInterface
{
    public static void Check(KernelSource source, int specializationCount)
    {
        var layout = source.Layout;
        if (layout.Bindings.Count != source.Bindings.Count)
        {
            throw new InvalidOperationException(
                $"{source.Name}: the shader binds {layout.Bindings.Count} buffers (0..{layout.Bindings.Count - 1}) but its KernelSource declares {source.Bindings.Count} bindings.");
        }

        for (var i = 0; i < layout.Bindings.Count; i++)
        {
            if (layout.Bindings[i] != source.Bindings[i])
            {
                throw new InvalidOperationException(
                    $"{source.Name}: binding {i} is {layout.Bindings[i]} in the shader but declared {source.Bindings[i]}.");
            }
        }

        if (layout.PushConstantBytes != source.PushConstantBytes)
        {
            throw new InvalidOperationException(
                $"{source.Name}: the shader's push constants take {layout.PushConstantBytes} bytes; its KernelSource declares {source.PushConstantBytes}.");
        }

        for (uint id = 0; id < specializationCount; id++)
        {
            if (!layout.SpecializationIds.Contains(id))
            {
                throw new ArgumentException(
                    $"{source.Name}: specialization constant {id} was given but the shader declares only ids [{string.Join(", ", layout.SpecializationIds.Order())}].",
                    "specialization");
            }
        }
    }
}
