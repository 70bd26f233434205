using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using Mamba2.Model.IO;
using Xunit;

namespace Mamba2.Model.Tests;

public sealed class SafetensorsTests : IDisposable
{
    private const string SupportedList = "F64, F32, F16, BF16, I64, I32";

    private readonly string _dir = Path.Combine(Path.GetTempPath(), "safetensors-tests-" + Guid.NewGuid().ToString("N"));

    public SafetensorsTests() => Directory.CreateDirectory(_dir);

    public static TheoryData<SafetensorsDType, int[]> DTypesAndShapes
    {
        get
        {
            var data = new TheoryData<SafetensorsDType, int[]>();
            foreach (var dtype in Enum.GetValues<SafetensorsDType>())
            {
                foreach (var shape in new[] { Array.Empty<int>(), [1], [3, 5, 7], [2, 0] })
                {
                    data.Add(dtype, shape);
                }
            }

            return data;
        }
    }

    public static TheoryData<string, byte[], string[]> MalformedFiles => new()
    {
        { "too short", [1, 2, 3], ["3 bytes", "too short"] },
        { "header past end", [.. U64(1000), .. "{}      "u8], ["header length 1000", "runs past the end"] },
        { "absurd header length", [.. U64(1UL << 40), .. new byte[64]], ["exceeds", "limit"] },
        { "invalid json", Raw("{\"x\": {\"dtype\": \"F32\",", 0), ["not valid UTF-8 JSON"] },
        { "invalid utf-8", [.. U64(8), (byte)'{', (byte)'"', 0xFF, 0xFE, (byte)'"', (byte)':', (byte)'1', (byte)'}'], ["not valid UTF-8 JSON"] },
        { "root not object", Raw("[1, 2]", 0), ["must be a JSON object", "Array"] },
        { "entry not object", Raw("{\"x\": 5}", 0), ["tensor 'x'", "must be a JSON object", "Number"] },
        { "missing dtype", Raw("{\"x\": {\"shape\": [2], \"data_offsets\": [0, 8]}}", 8), ["tensor 'x'", "\"dtype\""] },
        { "missing shape", Raw("{\"x\": {\"dtype\": \"F32\", \"data_offsets\": [0, 8]}}", 8), ["tensor 'x'", "missing \"shape\""] },
        { "missing offsets", Raw("{\"x\": {\"dtype\": \"F32\", \"shape\": [2]}}", 8), ["tensor 'x'", "missing \"data_offsets\""] },
        { "negative dimension", Raw("{\"x\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", 8), ["tensor 'x'", "non-negative integers"] },
        { "fractional offset", Raw("{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8.5]}}", 8), ["tensor 'x'", "non-negative integers"] },
        { "one offset", Raw("{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8]}}", 8), ["tensor 'x'", "exactly two"] },
        { "offsets out of region", Raw("{\"x\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 8), ["tensor 'x'", "outside the 8-byte data region"] },
        { "end before begin", Raw("{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 0]}}", 8), ["tensor 'x'", "end before they begin"] },
        { "length mismatch", Raw("{\"x\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8), ["tensor 'x'", "needs 12 bytes", "cover 8"] },
        { "shape overflow", Raw("{\"x\": {\"dtype\": \"F64\", \"shape\": [2147483647, 2147483647, 2147483647], \"data_offsets\": [0, 8]}}", 8), ["tensor 'x'", "too large"] },
        {
            "overlap",
            Raw("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 12),
            ["'a' [0, 8)", "'b' [4, 12)", "overlap"]
        },
        { "duplicate key", Raw("{\"x\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]}, \"x\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [4, 8]}}", 8), ["'x' appears twice"] },
        { "metadata not strings", Raw("{\"__metadata__\": {\"epoch\": 3}}", 0), ["__metadata__", "'epoch' is Number"] },
    };

    [Theory]
    [MemberData(nameof(DTypesAndShapes))]
    public void RoundTripsEveryDType(SafetensorsDType dtype, int[] shape)
    {
        var n = (int)shape.Aggregate(1L, (a, d) => a * d);
        // Quarter steps up to +-4.5 are exact in every float dtype, integers in every integer dtype.
        var values = Enumerable.Range(0, n).Select(i => (i % 37 - 18) * 0.25).ToArray();
        var tensor = dtype switch
        {
            SafetensorsDType.I64 => HostTensor.FromInt64("t", [.. Enumerable.Range(0, n).Select(i => i % 2 == 0 ? long.MaxValue - i : long.MinValue + i)], shape),
            SafetensorsDType.I32 => HostTensor.FromInt32("t", [.. Enumerable.Range(0, n).Select(i => i % 2 == 0 ? int.MaxValue - i : int.MinValue + i)], shape),
            _ => HostTensor.FromFloat64("t", values, shape).Convert(dtype),
        };
        var path = NewPath();

        SafetensorsWriter.Write(path, [tensor]);
        using var file = SafetensorsFile.Open(path);
        var read = file.Read("t");

        Assert.Equal(dtype, read.DType);
        Assert.Equal(shape, read.Shape);
        Assert.Equal(shape.Length, read.Rank);
        Assert.Equal(n, read.ElementCount);
        Assert.Equal(tensor.Data.ToArray(), read.Data.ToArray());
        if (dtype.IsFloatingPoint())
        {
            Assert.Equal(values, read.ToFloat64());
            Assert.Equal(values.Select(v => (float)v), read.ToFloat32());
        }
        else
        {
            Assert.Equal(tensor.ToInt64(), read.ToInt64());
        }
    }

    [Fact]
    public void ScalarHasOneElement()
    {
        var s = HostTensor.FromFloat32("s", [2.5f]);
        Assert.Empty(s.Shape);
        Assert.Equal(1, s.ElementCount);
        Assert.Equal(4, s.Data.Length);
    }

    [Fact]
    public void RoundTripsSeveralTensorsAndMetadata()
    {
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["note"] = "quotes \" and ünïcödé + <tags>" };
        var tensors = new[]
        {
            HostTensor.FromFloat32("layers.0.w", [1, 2, 3, 4, 5, 6], 2, 3),
            HostTensor.FromInt64("step", [42]),
            HostTensor.FromFloat64("a+b/ç", [0.1, -0.2], 2).Convert(SafetensorsDType.BF16),
        };
        var path = NewPath();

        SafetensorsWriter.Write(path, tensors, metadata);
        using var file = SafetensorsFile.Open(path);

        Assert.Equal(["layers.0.w", "step", "a+b/ç"], file.Names);
        Assert.Equal(metadata, file.Metadata);
        Assert.True(file.Contains("step"));
        Assert.False(file.Contains("__metadata__"));
        var info = file.Info("a+b/ç");
        Assert.Equal(SafetensorsDType.BF16, info.DType);
        Assert.Equal([2], info.Shape);
        Assert.Equal((32L, 36L), (info.Begin, info.End));
        Assert.Equal([42L], file.Read("step").ToInt64());
        Assert.Equal([1f, 2, 3, 4, 5, 6], file.Read("layers.0.w").ToFloat32());

        var all = SafetensorsFile.ReadAll(path);
        Assert.Equal(file.Names, all.Keys);
        Assert.Equal(tensors[2].Data.ToArray(), all["a+b/ç"].Data.ToArray());
    }

    [Fact]
    public void FileWithoutMetadataHasEmptyMetadata()
    {
        var path = NewPath();
        SafetensorsWriter.Write(path, [HostTensor.FromInt32("i", [1, 2], 2)]);
        using var file = SafetensorsFile.Open(path);
        Assert.Empty(file.Metadata);
        Assert.DoesNotContain("__metadata__", Encoding.UTF8.GetString(File.ReadAllBytes(path)));
    }

    [Fact]
    public void ByteLayoutMatchesTheSpec()
    {
        var path = NewPath();
        SafetensorsWriter.Write(
            path,
            [HostTensor.FromFloat32("a", [1.5f, -2f, 3.25f], 3), HostTensor.FromInt64("b", [7, -8], 1, 2)],
            new Dictionary<string, string> { ["k"] = "v" });
        var bytes = File.ReadAllBytes(path);

        var headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        var dataStart = 8 + headerLength;
        Assert.Equal(0, dataStart % 8);
        var headerText = Encoding.UTF8.GetString(bytes, 8, (int)headerLength);
        var json = headerText.TrimEnd(' ');
        Assert.StartsWith("{", json);
        Assert.EndsWith("}", json);
        Assert.InRange(headerLength - json.Length, 0, 7); // padding is the fewest spaces that reach a multiple of 8
        using var doc = JsonDocument.Parse(headerText);
        var root = doc.RootElement;
        Assert.Equal(["__metadata__", "a", "b"], root.EnumerateObject().Select(p => p.Name));
        Assert.Equal("v", root.GetProperty("__metadata__").GetProperty("k").GetString());

        var a = root.GetProperty("a");
        Assert.Equal("F32", a.GetProperty("dtype").GetString());
        Assert.Equal([3L], a.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()));
        Assert.Equal([0L, 12L], a.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()));
        var b = root.GetProperty("b");
        Assert.Equal("I64", b.GetProperty("dtype").GetString());
        Assert.Equal([1L, 2L], b.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()));
        Assert.Equal([12L, 28L], b.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()));

        Assert.Equal(dataStart + 28, bytes.Length);
        var data = bytes.AsSpan((int)dataStart);
        Assert.Equal(1.5f, BinaryPrimitives.ReadSingleLittleEndian(data));
        Assert.Equal(-2f, BinaryPrimitives.ReadSingleLittleEndian(data[4..]));
        Assert.Equal(3.25f, BinaryPrimitives.ReadSingleLittleEndian(data[8..]));
        Assert.Equal(7L, BinaryPrimitives.ReadInt64LittleEndian(data[12..]));
        Assert.Equal(-8L, BinaryPrimitives.ReadInt64LittleEndian(data[20..]));
    }

    [Fact]
    public void ReadsAHandWrittenFile()
    {
        var path = NewPath();
        File.WriteAllBytes(path, [.. Raw("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0), .. F32(1.5f), .. F32(-0.75f)]);

        using var file = SafetensorsFile.Open(path);

        Assert.Equal(["x"], file.Names);
        var x = file.Read("x");
        Assert.Equal(SafetensorsDType.F32, x.DType);
        Assert.Equal([2], x.Shape);
        Assert.Equal([1.5f, -0.75f], x.ToFloat32());
    }

    [Fact]
    public void ReadsAHandWrittenFileInPyTorchStyle()
    {
        // Metadata first, a BF16 matrix, an I64 scalar, and unpadded JSON followed by padding spaces.
        const string header =
            "{\"__metadata__\":{\"format\":\"pt\"},\"w\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8]}," +
            "\"step\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]}}";
        var data = new byte[16];
        ushort[] w = [0x3F80, 0xC020, 0x0000, 0x4780];
        for (var i = 0; i < 4; i++)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(2 * i), w[i]);
        }

        BinaryPrimitives.WriteInt64LittleEndian(data.AsSpan(8), 123456789012);
        var path = NewPath();
        File.WriteAllBytes(path, [.. Raw(header, 0), .. data]);

        using var file = SafetensorsFile.Open(path);

        Assert.Equal("pt", file.Metadata["format"]);
        Assert.Equal([1f, -2.5f, 0f, 65536f], file.Read("w").ToFloat32());
        Assert.Equal([1.0, -2.5, 0.0, 65536.0], file.Read("w").ToFloat64());
        var step = file.Read("step");
        Assert.Empty(step.Shape);
        Assert.Equal([123456789012L], step.ToInt64());
        Assert.Equal([123456789012.0], step.ToFloat64());
    }

    [Theory]
    [InlineData(1.0f, 0x3C00)]
    [InlineData(-2.5f, 0xC100)]
    [InlineData(0.1f, 0x2E66)]
    [InlineData(65504f, 0x7BFF)]
    [InlineData(65520f, 0x7C00)] // halfway to the next binade: ties to even, which is Inf
    [InlineData(6.1035156e-05f, 0x0400)] // smallest normal, 2^-14
    [InlineData(5.9604645e-08f, 0x0001)] // smallest subnormal, 2^-24
    [InlineData(1e-8f, 0x0000)]
    [InlineData(-0f, 0x8000)]
    [InlineData(float.PositiveInfinity, 0x7C00)]
    [InlineData(1.00048828125f, 0x3C00)] // 1 + 2^-11, a tie: down to even
    [InlineData(1.00146484375f, 0x3C02)] // 1 + 3 * 2^-11, a tie: up to even
    public void Float16Conversion(float value, int bits)
    {
        var half = HostTensor.FromFloat32("h", [value]).Convert(SafetensorsDType.F16);

        Assert.Equal((ushort)bits, BinaryPrimitives.ReadUInt16LittleEndian(half.Data.Span));
        Assert.Equal((float)BitConverter.UInt16BitsToHalf((ushort)bits), half.ToFloat32()[0]);
    }

    [Theory]
    [InlineData(1.0f, 0x3F80)]
    [InlineData(-2.5f, 0xC020)]
    [InlineData(0.1f, 0x3DCD)]
    [InlineData(65504f, 0x4780)] // rounds up to 65536
    [InlineData(1.17549435e-38f, 0x0080)] // smallest normal float
    [InlineData(1e-40f, 0x0001)] // subnormal
    [InlineData(float.Epsilon, 0x0000)]
    [InlineData(float.MaxValue, 0x7F80)] // rounds to Inf
    [InlineData(float.NegativeInfinity, 0xFF80)]
    [InlineData(-0f, 0x8000)]
    public void BFloat16Conversion(float value, int bits)
    {
        var bf = HostTensor.FromFloat32("b", [value]).Convert(SafetensorsDType.BF16);

        Assert.Equal((ushort)bits, BinaryPrimitives.ReadUInt16LittleEndian(bf.Data.Span));
        Assert.Equal(BitConverter.UInt32BitsToSingle((uint)bits << 16), bf.ToFloat32()[0]);
    }

    [Theory]
    [InlineData(0x3F808000u, 0x3F80)] // tie, lower neighbour even: down
    [InlineData(0x3F818000u, 0x3F82)] // tie, lower neighbour odd: up
    [InlineData(0x3F808001u, 0x3F81)] // just above the tie: up
    [InlineData(0x3F807FFFu, 0x3F80)] // just below the tie: down
    [InlineData(0xBF818000u, 0xBF82)] // negative tie
    [InlineData(0x7F7F8000u, 0x7F80)] // tie at the top rounds to Inf
    public void BFloat16RoundsToNearestEven(uint floatBits, int bits)
    {
        var bf = HostTensor.FromFloat32("b", [BitConverter.UInt32BitsToSingle(floatBits)]).Convert(SafetensorsDType.BF16);

        Assert.Equal((ushort)bits, BinaryPrimitives.ReadUInt16LittleEndian(bf.Data.Span));
    }

    [Fact]
    public void Float64ConvertsWithOneRounding()
    {
        // Just above a tie; rounding to float32 first would land on the tie and then round down.
        var d = 1.0 + Math.Pow(2, -8) + Math.Pow(2, -30);
        var bf = HostTensor.FromFloat64("b", [d, -d], 2).Convert(SafetensorsDType.BF16);
        Assert.Equal([0x81, 0x3F, 0x81, 0xBF], bf.Data.ToArray());

        var h = 1.0 + Math.Pow(2, -11) + Math.Pow(2, -40);
        var half = HostTensor.FromFloat64("h", [h]).Convert(SafetensorsDType.F16);
        Assert.Equal(0x3C01, BinaryPrimitives.ReadUInt16LittleEndian(half.Data.Span));
    }

    [Theory]
    [InlineData(0x7FC00000u, 0x7FC0)]
    [InlineData(0xFFC00000u, 0xFFC0)]
    [InlineData(0x7F800001u, 0x7FC0)] // payload only in the dropped bits: must not become Inf
    [InlineData(0x7FA00000u, 0x7FE0)]
    public void NaNStaysNaN(uint floatBits, int bf16Bits)
    {
        var nan = HostTensor.FromFloat32("n", [BitConverter.UInt32BitsToSingle(floatBits)]);

        var bf = nan.Convert(SafetensorsDType.BF16);
        Assert.Equal((ushort)bf16Bits, BinaryPrimitives.ReadUInt16LittleEndian(bf.Data.Span));
        Assert.True(float.IsNaN(bf.ToFloat32()[0]));

        var half = nan.Convert(SafetensorsDType.F16);
        var halfBits = BinaryPrimitives.ReadUInt16LittleEndian(half.Data.Span);
        Assert.Equal(0x7C00, halfBits & 0x7C00);
        Assert.NotEqual(0, halfBits & 0x03FF);
        Assert.Equal(floatBits >> 31, (uint)halfBits >> 15);
        Assert.True(float.IsNaN(half.ToFloat32()[0]));
        Assert.True(double.IsNaN(HostTensor.FromFloat64("d", [double.NaN]).Convert(SafetensorsDType.BF16).ToFloat64()[0]));
    }

    [Fact]
    public void IntegerConversions()
    {
        var i32 = HostTensor.FromInt32("i", [-3, 0, int.MaxValue], 3);
        Assert.Equal([-3L, 0, int.MaxValue], i32.ToInt64());
        Assert.Equal([-3.0, 0, int.MaxValue], i32.ToFloat64());
        Assert.Equal([-3f, 0, 2147483648f], i32.ToFloat32());
        Assert.Equal([-3f, 0, 2147483648f], i32.Convert(SafetensorsDType.F32).ToFloat32());
        Assert.Equal([-3.0, 0, 2147483648.0], i32.Convert(SafetensorsDType.BF16).ToFloat64());

        var i64 = HostTensor.FromInt64("j", [long.MinValue, 5], 2);
        Assert.Equal([long.MinValue, 5], i64.ToInt64());
        Assert.Equal([-9.223372036854775808e18, 5.0], i64.ToFloat64());
    }

    [Fact]
    public void ToInt64RejectsFloatTensors()
    {
        var e = Assert.Throws<InvalidOperationException>(() => HostTensor.FromFloat32("weights", [1f]).ToInt64());
        Assert.Contains("weights", e.Message);
        Assert.Contains("F32", e.Message);
        Assert.Contains("I32, I64", e.Message);
    }

    [Fact]
    public void ConvertRejectsIntegerTargets()
    {
        var e = Assert.Throws<ArgumentException>(() => HostTensor.FromFloat32("w", [1f]).Convert(SafetensorsDType.I32));
        Assert.Contains("w", e.Message);
        Assert.Contains("I32", e.Message);
    }

    [Fact]
    public void FactoriesCheckTheElementCount()
    {
        var cases = new Action[]
        {
            () => HostTensor.FromFloat32("w", [1f, 2, 3], 2, 2),
            () => HostTensor.FromFloat64("w", [1.0, 2, 3], 2, 2),
            () => HostTensor.FromInt64("w", [1L, 2, 3], 2, 2),
            () => HostTensor.FromInt32("w", [1, 2, 3], 2, 2),
        };
        foreach (var make in cases)
        {
            var e = Assert.Throws<ArgumentException>(make);
            Assert.Contains("w:", e.Message);
            Assert.Contains("holds 4 elements but 3 values", e.Message);
        }

        Assert.Throws<ArgumentException>(() => HostTensor.FromFloat32("w", [], -1));
        var bytes = Assert.Throws<ArgumentException>(() => HostTensor.FromBytes("raw", SafetensorsDType.F16, new byte[5], 3));
        Assert.Contains("needs 6 bytes but 5", bytes.Message);
    }

    [Theory]
    [MemberData(nameof(MalformedFiles))]
    public void MalformedFilesAreRejected(string what, byte[] contents, string[] fragments)
    {
        var path = NewPath();
        File.WriteAllBytes(path, contents);

        var e = Assert.Throws<InvalidDataException>(() => SafetensorsFile.Open(path));

        Assert.Contains(path, e.Message);
        foreach (var fragment in fragments)
        {
            Assert.True(e.Message.Contains(fragment, StringComparison.Ordinal), $"{what}: '{fragment}' not in: {e.Message}");
        }
    }

    [Theory]
    [InlineData("U8")]
    [InlineData("F8_E4M3")]
    [InlineData("BOOL")]
    [InlineData("f32")]
    public void UnsupportedDTypeListsTheSupportedOnes(string dtype)
    {
        var path = NewPath();
        File.WriteAllBytes(path, Raw($"{{\"mask\": {{\"dtype\": \"{dtype}\", \"shape\": [4], \"data_offsets\": [0, 4]}}}}", 4));

        var e = Assert.Throws<InvalidDataException>(() => SafetensorsFile.Open(path));

        Assert.Contains(path, e.Message);
        Assert.Contains("'mask'", e.Message);
        Assert.Contains($"'{dtype}'", e.Message);
        Assert.Contains(SupportedList, e.Message);
    }

    [Fact]
    public void MissingTensorListsAvailableNames()
    {
        var path = NewPath();
        SafetensorsWriter.Write(path, Enumerable.Range(0, 25).Select(i => HostTensor.FromInt32($"t{i}", [i])));
        using var file = SafetensorsFile.Open(path);

        var e = Assert.Throws<KeyNotFoundException>(() => file.Read("missing.weight"));

        Assert.Contains(path, e.Message);
        Assert.Contains("'missing.weight'", e.Message);
        Assert.Contains("t0, t1, t2", e.Message);
        Assert.Contains("t19", e.Message);
        Assert.DoesNotContain("t20", e.Message);
        Assert.Contains("5 more", e.Message);
        Assert.Throws<KeyNotFoundException>(() => file.Info("missing.weight"));
    }

    [Fact]
    public void GapsBetweenTensorsAreAllowed()
    {
        var path = NewPath();
        var header = "{\"a\": {\"dtype\": \"I32\", \"shape\": [], \"data_offsets\": [4, 8]}, \"e\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [2, 2]}}";
        File.WriteAllBytes(path, [.. Raw(header, 0), 0xEE, 0xEE, 0xEE, 0xEE, 9, 0, 0, 0, 0xEE]);

        using var file = SafetensorsFile.Open(path);

        Assert.Equal([9L], file.Read("a").ToInt64());
        Assert.Empty(file.Read("e").ToFloat32());
    }

    [Fact]
    public void WriterRejectsDuplicateAndReservedNames()
    {
        var path = NewPath();
        var dup = Assert.Throws<ArgumentException>(
            () => SafetensorsWriter.Write(path, [HostTensor.FromInt32("x", [1]), HostTensor.FromInt32("x", [2])]));
        Assert.Contains("'x'", dup.Message);
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, [HostTensor.FromInt32("__metadata__", [1])]));
        Assert.Empty(Directory.GetFiles(_dir));
    }

    [Fact]
    public void WriterReplacesAnExistingFileAndLeavesNoTemporary()
    {
        var path = NewPath();
        SafetensorsWriter.Write(path, [HostTensor.FromFloat32("old", [1f, 2f], 2)]);
        SafetensorsWriter.Write(path, [HostTensor.FromFloat32("new", [3f])]);

        using (var file = SafetensorsFile.Open(path))
        {
            Assert.Equal(["new"], file.Names);
            Assert.Equal([3f], file.Read("new").ToFloat32());
        }

        Assert.Equal([path], Directory.GetFiles(_dir));
    }

    [Fact]
    public void ReadAfterDisposeThrows()
    {
        var path = NewPath();
        SafetensorsWriter.Write(path, [HostTensor.FromFloat32("x", [1f])]);
        var file = SafetensorsFile.Open(path);
        file.Dispose();
        Assert.Throws<ObjectDisposedException>(() => file.Read("x"));
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string NewPath() => Path.Combine(_dir, Guid.NewGuid().ToString("N") + ".safetensors");

    private static byte[] U64(ulong value)
    {
        var bytes = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, value);
        return bytes;
    }

    private static byte[] F32(float value)
    {
        var bytes = new byte[4];
        BinaryPrimitives.WriteSingleLittleEndian(bytes, value);
        return bytes;
    }

    /// <summary>A file as the reference writer lays it out: length, JSON padded with spaces to 8 bytes, then zeroed data.</summary>
    private static byte[] Raw(string json, int dataBytes)
    {
        var header = Encoding.UTF8.GetBytes(json);
        var padded = (header.Length + 7) / 8 * 8;
        var file = new byte[8 + padded + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(file, (ulong)padded);
        file.AsSpan(8, padded).Fill((byte)' ');
        header.CopyTo(file, 8);
        return file;
    }
}
