namespace Mamba2.Vulkan;

/// <summary>
/// A kernel's interface as its SPIR-V states it: one storage buffer per binding of set 0 with the access its
/// qualifiers give (readonly: NonWritable, writeonly: NonReadable), the push-constant block's size, and the
/// specialization ids it declares, its SPIR-V version and workgroup size. Registering a kernel needs nothing more than
/// its resource name.
/// </summary>
public sealed record SpirvLayout(IReadOnlyList<BufferAccess> Bindings, int PushConstantBytes, IReadOnlySet<uint> SpecializationIds)
{
    /// <summary>The module's SPIR-V version word (0x00010600 for 1.6).</summary>
    public uint Version { get; init; }

    /// <summary>The workgroup size's three dimensions, each a literal or a specialization constant with its default.</summary>
    public IReadOnlyList<WorkgroupDimension> LocalSize { get; init; } = [new(1, null), new(1, null), new(1, null)];

    /// <summary>SPIR-V 1.6 lets the driver pick each pipeline's subgroup size unless the pipeline requires one.</summary>
    public bool AllowsVaryingSubgroupSize => Version >= 0x00010600;

    /// <summary>The workgroup size under <paramref name="specialization"/> (constant id k = element k).</summary>
    public (uint X, uint Y, uint Z) WorkgroupSize(IReadOnlyList<uint> specialization) =>
        (LocalSize[0].Under(specialization), LocalSize[1].Under(specialization), LocalSize[2].Under(specialization));

    private const int OpExecutionMode = 16;
    private const int OpExecutionModeId = 331;
    private const int OpConstant = 43;
    private const int OpConstantComposite = 44;
    private const int OpSpecConstant = 50;
    private const int OpSpecConstantComposite = 51;
    private const int ExecutionModeLocalSize = 17;
    private const int ExecutionModeLocalSizeId = 38;
    private const int DecorationBuiltIn = 11;
    private const int BuiltInWorkgroupSize = 25;
    private const int OpTypeInt = 21;
    private const int OpTypeFloat = 22;
    private const int OpTypeVector = 23;
    private const int OpTypeStruct = 30;
    private const int OpTypePointer = 32;
    private const int OpVariable = 59;
    private const int OpDecorate = 71;
    private const int OpMemberDecorate = 72;
    private const int DecorationSpecId = 1;
    private const int DecorationBinding = 33;
    private const int DecorationDescriptorSet = 34;
    private const int DecorationOffset = 35;
    private const int DecorationNonWritable = 24;
    private const int DecorationNonReadable = 25;
    private const int StorageClassUniform = 2;
    private const int StorageClassPushConstant = 9;
    private const int StorageClassStorageBuffer = 12;

    /// <summary>Reads the interface of <paramref name="words"/>; <paramref name="name"/> goes into error messages.</summary>
    public static SpirvLayout Read(string name, ReadOnlySpan<uint> words)
    {
        var binding = new Dictionary<uint, uint>();            // variable -> binding
        var specIds = new HashSet<uint>();
        var specIdOf = new Dictionary<uint, uint>();          // constant -> its specialization id
        var constants = new Dictionary<uint, uint>();         // 32-bit constant or spec constant -> value (default)
        var composites = new Dictionary<uint, uint[]>();      // composite constant -> constituents
        uint? workgroupSizeBuiltIn = null;
        uint[]? localSizeIds = null;
        uint[]? localSizeLiterals = null;
        var varFlags = new Dictionary<uint, (bool NoWrite, bool NoRead)>();
        var memberFlags = new Dictionary<uint, Dictionary<uint, (bool NoWrite, bool NoRead)>>();  // struct -> member
        var memberOffset = new Dictionary<uint, Dictionary<uint, uint>>();
        var pointee = new Dictionary<uint, uint>();            // pointer type -> pointee
        var structMembers = new Dictionary<uint, uint[]>();    // struct -> member types
        var scalarBytes = new Dictionary<uint, uint>();        // scalar or vector type -> bytes
        var variables = new List<(uint Id, uint Type, uint Storage)>();
        for (var i = 5; i < words.Length;)
        {
            var count = (int)(words[i] >> 16);
            var op = (int)(words[i] & 0xffff);
            if (count == 0 || i + count > words.Length)
            {
                throw new InvalidDataException($"{name}: malformed SPIR-V at word {i}.");
            }

            var w = words.Slice(i, count);
            switch (op)
            {
                case OpDecorate when count >= 3:
                    var target = w[1];
                    switch ((int)w[2])
                    {
                        case DecorationBinding when count >= 4: binding[target] = w[3]; break;
                        case DecorationSpecId when count >= 4: specIds.Add(w[3]); specIdOf[target] = w[3]; break;
                        case DecorationBuiltIn when count >= 4 && w[3] == BuiltInWorkgroupSize: workgroupSizeBuiltIn = target; break;
                        case DecorationDescriptorSet when count >= 4 && w[3] != 0:
                            throw new InvalidDataException($"{name}: only descriptor set 0 is supported (found set {w[3]}).");
                        case DecorationNonWritable: varFlags[target] = (true, varFlags.GetValueOrDefault(target).NoRead); break;
                        case DecorationNonReadable: varFlags[target] = (varFlags.GetValueOrDefault(target).NoWrite, true); break;
                    }

                    break;
                case OpMemberDecorate when count >= 4:
                    var members = memberFlags.TryGetValue(w[1], out var m) ? m : memberFlags[w[1]] = [];
                    var flags = members.GetValueOrDefault(w[2]);
                    switch ((int)w[3])
                    {
                        case DecorationNonWritable: members[w[2]] = (true, flags.NoRead); break;
                        case DecorationNonReadable: members[w[2]] = (flags.NoWrite, true); break;
                        case DecorationOffset when count >= 5:
                            (memberOffset.TryGetValue(w[1], out var o) ? o : memberOffset[w[1]] = [])[w[2]] = w[4];
                            break;
                    }

                    break;
                case OpTypeInt or OpTypeFloat when count >= 3: scalarBytes[w[1]] = w[2] / 8; break;
                case OpTypeVector when count >= 4: scalarBytes[w[1]] = scalarBytes.GetValueOrDefault(w[2]) * w[3]; break;
                case OpTypeStruct: structMembers[w[1]] = w[2..].ToArray(); break;
                case OpTypePointer when count >= 4: pointee[w[1]] = w[3]; break;
                case OpVariable when count >= 4: variables.Add((w[2], w[1], w[3])); break;
                case OpExecutionMode when count >= 6 && w[2] == ExecutionModeLocalSize: localSizeLiterals = w[3..6].ToArray(); break;
                case OpExecutionModeId when count >= 6 && w[2] == ExecutionModeLocalSizeId: localSizeIds = w[3..6].ToArray(); break;
                case OpConstant or OpSpecConstant when count == 4: constants[w[2]] = w[3]; break;
                case OpConstantComposite or OpSpecConstantComposite when count >= 6: composites[w[2]] = w[3..].ToArray(); break;
            }

            i += count;
        }

        var accesses = new SortedDictionary<uint, BufferAccess>();
        var pushBytes = 0;
        foreach (var (id, type, storage) in variables)
        {
            var block = pointee.GetValueOrDefault(type);
            if (storage == StorageClassPushConstant)
            {
                var offsets = memberOffset.GetValueOrDefault(block) ?? [];
                var types = structMembers.GetValueOrDefault(block) ?? [];
                for (uint k = 0; k < types.Length; k++)
                {
                    var size = scalarBytes.TryGetValue(types[k], out var s)
                        ? s
                        : throw new InvalidDataException($"{name}: push-constant member {k} is not a scalar or vector.");
                    pushBytes = Math.Max(pushBytes, (int)(offsets.GetValueOrDefault(k) + size));
                }
            }
            else if ((storage == StorageClassStorageBuffer || storage == StorageClassUniform) && binding.TryGetValue(id, out var b))
            {
                var (noWrite, noRead) = varFlags.GetValueOrDefault(id);
                if (memberFlags.TryGetValue(block, out var mf) && structMembers.TryGetValue(block, out var mt) && mt.Length > 0)
                {
                    noWrite |= Enumerable.Range(0, mt.Length).All(k => mf.GetValueOrDefault((uint)k).NoWrite);
                    noRead |= Enumerable.Range(0, mt.Length).All(k => mf.GetValueOrDefault((uint)k).NoRead);
                }

                var access = noWrite ? BufferAccess.Read : noRead ? BufferAccess.Write : BufferAccess.ReadWrite;
                // Two views of one binding (a float and a vec4 block) need what either does.
                accesses[b] = accesses.TryGetValue(b, out var other) && other != access ? BufferAccess.ReadWrite : access;
            }
        }

        if (!accesses.Keys.SequenceEqual(Enumerable.Range(0, accesses.Count).Select(k => (uint)k)))
        {
            throw new InvalidDataException($"{name}: bindings must be numbered 0..n-1; the shader binds [{string.Join(", ", accesses.Keys)}].");
        }

        // The WorkgroupSize built-in overrides the execution mode; either may name (spec) constants or give literals.
        var sizeIds = workgroupSizeBuiltIn is { } ws && composites.TryGetValue(ws, out var parts) && parts.Length == 3 ? parts : localSizeIds;
        WorkgroupDimension[] localSize = sizeIds is not null
            ? [.. sizeIds.Select(id => new WorkgroupDimension(constants.GetValueOrDefault(id, 1u), specIdOf.TryGetValue(id, out var k) ? k : null))]
            : [.. (localSizeLiterals ?? [1, 1, 1]).Select(v => new WorkgroupDimension(v, null))];
        return new SpirvLayout([.. accesses.Values], pushBytes, specIds) { Version = words.Length > 1 ? words[1] : 0, LocalSize = localSize };
    }
}

/// <summary>One dimension of a workgroup's size: a literal, or the specialization constant <see cref="SpecId"/> with its default.</summary>
public readonly record struct WorkgroupDimension(uint Default, uint? SpecId)
{
    /// <summary>Its value when constant id k takes element k of <paramref name="specialization"/>.</summary>
    public uint Under(IReadOnlyList<uint> specialization) => SpecId is { } id && id < specialization.Count ? specialization[(int)id] : Default;
}
