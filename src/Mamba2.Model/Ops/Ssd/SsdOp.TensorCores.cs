using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops.Ssd;

// The SSD's products on tensor cores (SsdOptions.Precision fp32-fast or bf16): forward chunk_state, C.B^T once per
// group and chunk_scan; backward chunk_state (SsdOp.cs picks it), dx, dcb and from it dC and dB. chunk_cumsum,
// state_passing and the backward's reductions are the fp32 kernels (decays and states stay fp32).
public static partial class SsdOp
{
    /// <summary>Workgroups that share each dcb tile's heads, at most (one per head where there are fewer).</summary>
    private const int DcbSplits = 2;

    /// <summary>Why the SSD cannot compute in <paramref name="precision"/> on <paramref name="device"/>, or null when it can.</summary>
    public static string? WhyNot(GpuDevice device, Precision precision) =>
        precision == Precision.Fp32 ? null
        : WhyNotTensorCores(device.Capabilities, device.Name, precision.Operands(device)) is { } why ? $"Ssd in {precision.Name()}: {why}" : null;

    /// <summary>
    /// The tensor-core SSD's tiles on a device per operand type, for d_state within the default tile and above it
    /// (what <c>./mamba2 devices</c> prints), or why it has none.
    /// </summary>
    public static IEnumerable<string> DescribeTensorCores(DeviceCapabilities caps, string deviceName)
    {
        foreach (var operands in new[] { GemmOperands.F16, GemmOperands.Bf16, GemmOperands.Bf16ViaF16 })
        {
            var bf16 = operands == GemmOperands.Bf16;
            var name = operands.ToString();
            if (WhyNotTensorCores(caps, deviceName, operands) is { } why)
            {
                yield return $"SSD {name}: none ({why})";
                continue;
            }

            var narrow = SsdTensorCoreTiles.Choose(caps, bf16, 1)!;
            var wide = SsdTensorCoreTiles.Choose(caps, bf16, int.MaxValue)!;
            yield return $"SSD {name}: {narrow}" + (wide == narrow ? "" : $"; d_state above {narrow.Scan.BN}: {wide}");
        }
    }

    /// <summary>Why the SSD's tensor-core kernels cannot multiply <paramref name="operands"/> on a device, or null.</summary>
    internal static string? WhyNotTensorCores(DeviceCapabilities caps, string deviceName, GemmOperands operands)
    {
        var bf16 = operands == GemmOperands.Bf16;
        foreach (var kernel in new KernelSource[]
                 {
                     Shaders.ChunkCbTc(operands), Shaders.ChunkStateTc(operands), Shaders.ChunkScanTc(operands), Shaders.ChunkScanBidirTc(operands),
                     Shaders.ChunkScanBwdDcbTc(operands),
                     Shaders.ChunkScanBwdDbcTc(operands),
                 })
        {
            if (kernel.WhyNotRunnable(caps) is { } why)
            {
                return why;
            }
        }

        return SsdTensorCoreTile.Default(caps, bf16) is null
            ? $"{deviceName} lists no {(bf16 ? "bf16" : "f16")} cooperative-matrix shape with fp32 accumulation that fits a tile"
            : null;
    }

    private static SsdTensorCoreTiles TensorCoreTilesFor(GpuDevice device, Precision precision, SsdShape s)
    {
        if (WhyNot(device, precision) is { } why)
        {
            throw new MissingFeatureException(why + ".");
        }

        // bf16 values as f16 run the f16 kernels' tile families.
        return SsdTensorCoreTiles.Choose(device.Capabilities, precision.Operands(device) == GemmOperands.Bf16, s.DState, OpTuning.Of(device).TensorCoreTile)!;
    }

    private static void RecordTensorCores(CommandStream st, SsdShape s, SsdTensorCoreTiles tiles, Piece pc, Tensor x, Tensor dt, Tensor A, Tensor B,
        Tensor C, SsdOptions o, SsdResult r, ScratchPool products)
    {
        var device = x.Device;
        var operands = o.Precision.Operands(device);
        var t = tiles.Scan;
        var (b, l, h, p, g, n, q) = ((uint)pc.Count, (uint)s.SeqLen, (uint)s.Heads, (uint)s.HeadDim, (uint)s.Groups, (uint)s.DState, (uint)s.Chunk);
        var nc = (uint)s.Chunks;

        RecordCumsum(st, s, pc, dt, A, o, r.DtOut, r.DACumsum, r.DACumsumLo);
        st.Section(Stages[0]);

        RecordChunkState(st, s, default, pc, x, B, r.DtOut, r.DACumsum, r.DACumsumLo, r.ChunkStates, weights: 0, o.Mirrored, tc: tiles.State, operands: operands);
        st.Section(Stages[1]);

        RecordStatePassing(st, s, pc, r.ChunkStates, r.DACumsum, o.InitialStates, r.FinalStates, o.Mirrored);
        st.Section(Stages[2]);

        // C.B^T once per (batch, chunk, group), then the outputs.
        var cb = RecordChunkCb(st, s, t, pc, B, C, o, products);
        var mirrored = SsdFlags.Mirrored.If(o.Mirrored);
        var flags = SsdFlagsExtensions.ForD(o.D) | (o.Z is null ? SsdFlags.None : SsdFlags.Z | SsdFlags.SaveUngated) | mirrored
            | SsdFlags.InitialStates.If(o.InitialStates is not null);   // without, chunk 0 has no state term
        var y = tiles.Y;
        var bf16 = s.Bf16Tensors;   // x, C, z, y and y before the gate
        st.Dispatch(device.GetKernel(Shaders.ChunkScanTc(operands, bf16), y.ScanSpec(reverse: false, gShift: 0, gated: flags.HasFlag(SsdFlags.Z))), (Shaders.Groups(device, y.Tiles(q, p) * nc * b * h), 1, 1),
            new ScanPush(b, l, h, g, p, n, q, nc, flags),
            ChunkScanTcBindings.Forward(x: pc.Of(x, bf16), C: pc.Of(C, bf16), cb: cb, states: pc.Of(r.ChunkStates), dtOut: pc.Of(r.DtOut),
                dACumsum: pc.Of(r.DACumsum), D: (o.D ?? A).Buffer, z: pc.Of(o.Z ?? x, bf16), y: pc.Of(r.Y, bf16),
                yBeforeGate: pc.Of(r.YBeforeGate ?? r.Y, bf16), dACumsumLo: pc.Of(r.DACumsumLo)).ToArray());
        st.Section(Stages[3]);
    }

    /// <summary>
    /// C.B^T of every (batch, chunk, group) of the piece into scratch from <paramref name="pool"/> (b nc g Q^2 floats;
    /// the lower triangle of tiles, or with <paramref name="whole"/> every tile), on tensor cores: what tc/chunk_scan
    /// reads forward and backwards.
    /// </summary>
    private static GpuBuffer RecordChunkCb(CommandStream st, SsdShape s, SsdTensorCoreTile t, Piece pc, Tensor B, Tensor C, SsdOptions o, ScratchPool pool,
        bool whole = false)
    {
        var device = B.Device;
        var (b, l, h, p, g, n, q, nc) = ((uint)pc.Count, (uint)s.SeqLen, (uint)s.Heads, (uint)s.HeadDim, (uint)s.Groups, (uint)s.DState, (uint)s.Chunk, (uint)s.Chunks);
        var tiles = t.Tiles(q, q);
        var cb = ProductScratch(pool, "ssd.cb", (long)b * nc * g * q * q);
        var bf16 = B.DType == TensorDType.BF16;
        st.Dispatch(device.GetKernel(Shaders.ChunkCbTc(o.Precision.Operands(device), bf16), t.Spec), (Shaders.Groups(device, tiles * nc * b * g), 1, 1),
            new ScanPush(b, l, h, g, p, n, q, nc, SsdFlags.Mirrored.If(o.Mirrored) | SsdFlags.WholeCb.If(whole)), pc.Of(C, bf16), pc.Of(B, bf16), cb);
        st.Section(ChunkCbStage);
        return cb;
    }

    /// <summary>Rows of dx's dD parts per batch element: one per subgroup row block of each (chunk, row tile).</summary>
    private static int DdPartRows(SsdShape s, SsdTensorCoreTile t) => s.Chunks * (int)((s.Chunk + t.BM - 1) / t.BM * (t.BM / t.WM));

    /// <summary>
    /// The backward's dx and the direct part of ddt on tensor cores: tc/chunk_scan run backwards in time over C.B^T
    /// (<paramref name="cb"/>, recomputed for the backward), the roles <see cref="ChunkScanTcBindings.Dx"/> names.
    /// With <paramref name="ddParts"/> ((b, <see cref="DdPartRows"/>, h p)), dD's first level too: its epilogue reads g and x
    /// for D g and ddt already.
    /// </summary>
    private static void RecordDxTensorCores(CommandStream st, SsdShape s, SsdTensorCoreTile t, Piece pc, SsdOptions o, SsdFlags flags, uint gShift,
        GpuBuffer cb, Tensor g, Tensor B, Tensor C, Tensor dStatesNext, SsdResult saved, Tensor A, Tensor x, Tensor dx, Tensor ddtPart, Tensor? ddParts)
    {
        var device = g.Device;
        var (b, l, h, p, gr, n, q, nc) = ((uint)pc.Count, (uint)s.SeqLen, (uint)s.Heads, (uint)s.HeadDim, (uint)s.Groups, (uint)s.DState, (uint)s.Chunk, (uint)s.Chunks);
        var items = t.Tiles(q, p) * nc * b * h;
        var bf16 = x.DType == TensorDType.BF16;   // g, B, x and dx (the ddt parts stay fp32)
        var kernel = device.GetKernel(Shaders.ChunkScanTc(o.Precision.Operands(device), bf16), t.ScanSpec(reverse: true, gShift, accumulate: flags.HasFlag(SsdFlags.Accumulate)));
        st.Dispatch(kernel, (Shaders.Groups(device, items), 1, 1),
            new ScanPush(b, l, h, gr, p, n, q, nc, flags | SsdFlags.DdParts.If(ddParts is not null)),
            ChunkScanTcBindings.Dx(g: pc.Of(g, bf16), B: pc.Of(B, bf16), cb: cb, dStatesNext: pc.Of(dStatesNext), dtOut: pc.Of(saved.DtOut),
                dACumsum: pc.Of(saved.DACumsum), D: (o.D ?? A).Buffer, x: pc.Of(x, bf16), dx: pc.Of(dx, bf16), ddtPart: pc.Of(ddtPart),
                dACumsumLo: pc.Of(saved.DACumsumLo), ddParts: pc.Of(ddParts ?? ddtPart)).ToArray());
    }

    /// <summary>
    /// Scratch for the tensor-core products' intermediates (C.B^T, dcb): the pool's buffer of this name and size, which
    /// the next piece or run recorded on the stream reuses (the stream's hazard tracking orders them).
    /// </summary>
    private static GpuBuffer ProductScratch(ScratchPool pool, string name, long floats) => pool.Get(name, checked((int)floats)).Buffer;

    /// <summary>
    /// The backward's dC and dB on tensor cores, as mamba_ssm: dcb (the heads' weighted g.x^T summed per group, with
    /// each head's straddle parts of the dA_cs gradient) into scratch of the stream, then dC = dcb B and dB = dcb^T C
    /// for the whole group plus each head's state term (with its row dots, <paramref name="gys"/> and <paramref name="ts"/>).
    /// </summary>
    private static void RecordDbcTensorCores(CommandStream st, BackwardGeometry geo, Piece pc, SsdOptions o, GpuBuffer cb, Tensor g, Tensor x,
        Tensor B, Tensor C, Tensor dStates, SsdResult saved, Tensor dB, Tensor dC, Tensor gys, Tensor ts, Tensor straddle, ScratchPool pool, Action<int> mark)
    {
        var device = x.Device;
        var s = geo.S;
        var t = geo.Tc!.Scan;
        var operands = o.Precision.Operands(device);
        var bf16 = s.Bf16Tensors;   // g, x, B, C, dB and dC
        var (b, l, h, p, gr, n, q, nc) = ((uint)pc.Count, (uint)s.SeqLen, (uint)s.Heads, (uint)s.HeadDim, (uint)s.Groups, (uint)s.DState, (uint)s.Chunk, (uint)s.Chunks);
        var mirrored = SsdFlags.Mirrored.If(o.Mirrored);
        // Two workgroups per tile, each summing half the group's heads into a partial dcb, then one pass adds the
        // partials: twice the workgroups fill the GPU's last wave (docs/PERF.md).
        var splits = (uint)Math.Min(DcbSplits, h / gr);
        var plane = (long)b * nc * gr * q * q;
        var partials = ProductScratch(pool, "ssd.dcb_partials", splits * plane);
        st.Dispatch(device.GetKernel(Shaders.ChunkScanBwdDcbTc(operands, bf16), t.DcbSpec(geo.GShift, splits)),
            (Shaders.Groups(device, (long)geo.TilesT * geo.TilesS * nc * b * gr * splits), 1, 1),
            new ScanPush(b, l, h, gr, p, n, q, nc, mirrored),
            pc.Of(g, bf16), pc.Of(x, bf16), cb, pc.Of(saved.DtOut), pc.Of(saved.DACumsum), pc.Of(saved.DACumsumLo), partials, pc.Of(straddle));
        BufferBinding dcb = partials;
        if (splits > 1)
        {
            // Tiles above the diagonal are summed too, unwritten: no reader touches them. Into the first partial where
            // the second starts at a bindable offset (p0 + p1 either way, the same bits), else into a plane of its own.
            var planeBytes = (ulong)plane * sizeof(float);
            if (planeBytes % device.Capabilities.MinStorageBufferOffsetAlignment == 0)
            {
                dcb = new BufferBinding(partials, 0, planeBytes);
                Reductions.Blocks(st, new BufferBinding(partials, planeBytes, (splits - 1) * planeBytes), dcb, 1, splits - 1, (uint)plane, 1, splits - 1,
                    accumulate: true);
            }
            else
            {
                dcb = ProductScratch(pool, "ssd.dcb", plane);
                Reductions.Blocks(st, partials, dcb, 1, splits, (uint)plane, 1, splits);
            }
        }

        st.Section(DcbStage);

        var d = geo.Tc.Dbc;
        var items = d.Tiles(q, n) * nc * b * gr;
        var flags = mirrored | SsdFlags.Accumulate.If(geo.Accumulate);
        void Dbc(bool reverse, Tensor u, Tensor sm, Tensor r, Tensor w, Tensor output, Tensor rowDot) =>
            st.Dispatch(device.GetKernel(Shaders.ChunkScanBwdDbcTc(operands, bf16), d.DbcSpec(reverse, reverse ? 0 : geo.GShift)), (Shaders.Groups(device, items), 1, 1),
                new ScanPush(b, l, h, gr, p, n, q, nc, flags),
                pc.Of(u, bf16), pc.Of(sm), dcb, pc.Of(r, bf16), pc.Of(w, bf16), pc.Of(saved.DtOut), pc.Of(saved.DACumsum), pc.Of(saved.DACumsumLo),
                pc.Of(output, bf16), pc.Of(rowDot));

        Dbc(reverse: false, g, saved.ChunkStates, B, C, dC, gys);
        mark(4);
        Dbc(reverse: true, x, dStates, C, B, dB, ts);
        mark(5);
    }
}
