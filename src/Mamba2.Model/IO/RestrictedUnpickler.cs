using System.Buffers.Binary;
using System.Numerics;
using System.Text;

namespace Mamba2.Model.IO;

/// <summary>A global a pickle named (GLOBAL / STACK_GLOBAL): only ever a marker, never resolved to code.</summary>
internal sealed record PickleGlobal(string Module, string Name)
{
    public override string ToString() => $"{Module}.{Name}";
}

/// <summary>A tuple, kept apart from lists (a persistent id and a call's arguments are tuples).</summary>
internal sealed record PickleTuple(object?[] Items);

/// <summary>
/// A pickle interpreter that builds plain values (numbers, strings, bytes, tuples, lists, dicts) and hands calls
/// (REDUCE, NEWOBJ) and persistent ids to the caller, which decides what each allowed global makes. It never imports
/// or runs anything: a global the caller does not allow is refused with an error naming it. Protocols 2 to 5, the
/// opcodes torch.save and plain containers use; others are refused.
/// </summary>
internal sealed class RestrictedUnpickler(
    string source,
    Func<PickleGlobal, object?[], object?> call,
    Func<object?, object?> persistentLoad)
{
    private readonly List<object?> _stack = [];
    private readonly Stack<int> _marks = new();
    private readonly Dictionary<long, object?> _memo = [];

    /// <summary>The object the pickle in <paramref name="data"/> describes.</summary>
    public object? Load(ReadOnlySpan<byte> data)
    {
        var at = 0;
        while (true)
        {
            if (at >= data.Length)
            {
                throw Bad("ends before its STOP opcode");
            }

            var op = Byte(data, ref at);
            switch (op)
            {
                case 0x80: Byte(data, ref at); break;                     // PROTO n
                case 0x95: Take(data, ref at, 8); break;                  // FRAME length
                case (byte)'.': return Pop();                             // STOP
                case (byte)'(': _marks.Push(_stack.Count); break;         // MARK
                case (byte)'}': _stack.Add(new Dictionary<object, object?>()); break;
                case (byte)']': _stack.Add(new List<object?>()); break;
                case (byte)')': _stack.Add(new PickleTuple([])); break;
                case (byte)'N': _stack.Add(null); break;
                case 0x88: _stack.Add(true); break;                       // NEWTRUE
                case 0x89: _stack.Add(false); break;                      // NEWFALSE
                case (byte)'K': _stack.Add((long)Byte(data, ref at)); break;   // BININT1
                case (byte)'M': _stack.Add((long)BinaryPrimitives.ReadUInt16LittleEndian(Take(data, ref at, 2))); break;
                case (byte)'J': _stack.Add((long)BinaryPrimitives.ReadInt32LittleEndian(Take(data, ref at, 4))); break;
                case 0x8a: _stack.Add(Long(Take(data, ref at, Byte(data, ref at)))); break;                      // LONG1
                case 0x8b: _stack.Add(Long(Take(data, ref at, Length(data, ref at)))); break;             // LONG4
                case (byte)'G': _stack.Add(BinaryPrimitives.ReadDoubleBigEndian(Take(data, ref at, 8))); break;   // BINFLOAT
                case (byte)'X': _stack.Add(Utf8(Take(data, ref at, Length(data, ref at)))); break;         // BINUNICODE
                case 0x8c: _stack.Add(Utf8(Take(data, ref at, Byte(data, ref at)))); break;                      // SHORT_BINUNICODE
                case 0x8d: _stack.Add(Utf8(Take(data, ref at, Length8(data, ref at)))); break;            // BINUNICODE8
                case (byte)'U': _stack.Add(Encoding.Latin1.GetString(Take(data, ref at, Byte(data, ref at)))); break;   // SHORT_BINSTRING
                case (byte)'T': _stack.Add(Encoding.Latin1.GetString(Take(data, ref at, Length(data, ref at)))); break;
                case (byte)'C': _stack.Add(Take(data, ref at, Byte(data, ref at)).ToArray()); break;             // SHORT_BINBYTES
                case (byte)'B': _stack.Add(Take(data, ref at, Length(data, ref at)).ToArray()); break;   // BINBYTES
                case 0x8e: _stack.Add(Take(data, ref at, Length8(data, ref at)).ToArray()); break;       // BINBYTES8
                case (byte)'q': _memo[Byte(data, ref at)] = Peek(); break;                                       // BINPUT
                case (byte)'r': _memo[BinaryPrimitives.ReadUInt32LittleEndian(Take(data, ref at, 4))] = Peek(); break;
                case 0x94: _memo[_memo.Count] = Peek(); break;                                           // MEMOIZE
                case (byte)'h': _stack.Add(Memo(Byte(data, ref at))); break;                                     // BINGET
                case (byte)'j': _stack.Add(Memo(BinaryPrimitives.ReadUInt32LittleEndian(Take(data, ref at, 4)))); break;
                case 0x85: _stack.Add(new PickleTuple([Pop()])); break;                                  // TUPLE1
                case 0x86: { var b = Pop(); var a = Pop(); _stack.Add(new PickleTuple([a, b])); break; }
                case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); _stack.Add(new PickleTuple([a, b, c])); break; }
                case (byte)'t': _stack.Add(new PickleTuple(PopMark())); break;                           // TUPLE
                case (byte)'l': _stack.Add(new List<object?>(PopMark())); break;                         // LIST
                case (byte)'d': _stack.Add(Dict(PopMark())); break;                                      // DICT
                case (byte)'a': { var v = Pop(); List().Add(v); break; }                                 // APPEND
                case (byte)'e': { var items = PopMark(); List().AddRange(items); break; }                // APPENDS
                case (byte)'s': { var v = Pop(); var k = Pop(); Put(Peek(), k, v); break; }               // SETITEM
                case (byte)'u':                                                                          // SETITEMS
                    {
                        var items = PopMark();
                        for (var i = 0; i + 1 < items.Length; i += 2)
                        {
                            Put(Peek(), items[i], items[i + 1]);
                        }

                        break;
                    }

                case (byte)'c':                                                                          // GLOBAL
                    {
                        var module = Line(data, ref at);
                        _stack.Add(new PickleGlobal(module, Line(data, ref at)));
                        break;
                    }

                case 0x93: { var name = Pop(); var module = Pop(); _stack.Add(new PickleGlobal(Text(module), Text(name))); break; }   // STACK_GLOBAL
                case (byte)'R': { var args = Pop(); var f = Pop(); _stack.Add(Call(f, args)); break; }   // REDUCE
                case 0x81: { var args = Pop(); var cls = Pop(); _stack.Add(Call(cls, args)); break; }   // NEWOBJ
                case (byte)'b': Pop(); break;   // BUILD: an object's state (a state dict's _metadata); tensors need none
                case (byte)'Q': _stack.Add(persistentLoad(Pop())); break;                                 // BINPERSID
                case (byte)'0': Pop(); break;                                                             // POP
                default:
                    throw Bad($"has opcode 0x{op:x2} at byte {at - 1}, which a checkpoint of tensors does not use");
            }
        }
    }

    private object? Call(object? target, object? args)
    {
        if (target is not PickleGlobal g)
        {
            throw Bad($"calls {Describe(target)}, not a named global");
        }

        return call(g, args is PickleTuple t ? t.Items : throw Bad($"calls {g} with {Describe(args)} instead of a tuple of arguments"));
    }

    private static string Describe(object? value) => value?.GetType().Name ?? "None";

    private InvalidDataException Bad(string what) => new($"{source}: the pickle {what}.");

    private object? Pop()
    {
        if (_stack.Count == 0 || (_marks.Count > 0 && _stack.Count <= _marks.Peek()))
        {
            throw Bad("pops more than it pushed");
        }

        var v = _stack[^1];
        _stack.RemoveAt(_stack.Count - 1);
        return v;
    }

    private object? Peek() => _stack.Count > 0 ? _stack[^1] : throw Bad("reads an empty stack");

    private object?[] PopMark()
    {
        if (_marks.Count == 0)
        {
            throw Bad("ends a group it never began (no MARK)");
        }

        var from = _marks.Pop();
        var items = _stack.GetRange(from, _stack.Count - from).ToArray();
        _stack.RemoveRange(from, _stack.Count - from);
        return items;
    }

    private object? Memo(long key) => _memo.TryGetValue(key, out var v) ? v : throw Bad($"reads memo {key}, never stored");

    private List<object?> List() => Peek() as List<object?> ?? throw Bad($"appends to {Describe(Peek())}, not a list");

    private Dictionary<object, object?> Dict(object?[] items)
    {
        var d = new Dictionary<object, object?>();
        for (var i = 0; i + 1 < items.Length; i += 2)
        {
            Put(d, items[i], items[i + 1]);
        }

        return d;
    }

    private void Put(object? target, object? key, object? value)
    {
        if (target is not Dictionary<object, object?> d)
        {
            throw Bad($"sets an item of {Describe(target)}, not a dict");
        }

        d[key ?? throw Bad("uses None as a dict key")] = value;
    }

    private string Text(object? value) => value as string ?? throw Bad($"names a global with {Describe(value)}, not a string");

    private ReadOnlySpan<byte> Take(ReadOnlySpan<byte> data, ref int at, long count)
    {
        if (count < 0 || at + count > data.Length)
        {
            throw Bad($"runs past its end at byte {at}");
        }

        var span = data.Slice(at, (int)count);
        at += (int)count;
        return span;
    }

    private byte Byte(ReadOnlySpan<byte> data, ref int at) => Take(data, ref at, 1)[0];

    private int Length(ReadOnlySpan<byte> data, ref int at)
    {
        var n = BinaryPrimitives.ReadUInt32LittleEndian(Take(data, ref at, 4));
        return n <= int.MaxValue ? (int)n : throw Bad($"has a length of {n} bytes");
    }

    private int Length8(ReadOnlySpan<byte> data, ref int at)
    {
        var n = BinaryPrimitives.ReadUInt64LittleEndian(Take(data, ref at, 8));
        return n <= int.MaxValue ? (int)n : throw Bad($"has a length of {n} bytes");
    }

    private string Line(ReadOnlySpan<byte> data, ref int at)
    {
        var end = data[at..].IndexOf((byte)'\n');
        if (end < 0)
        {
            throw Bad("names a global without ending the line");
        }

        var s = Encoding.UTF8.GetString(data.Slice(at, end));
        at += end + 1;
        return s;
    }

    private static string Utf8(ReadOnlySpan<byte> bytes) => Encoding.UTF8.GetString(bytes);

    /// <summary>A little-endian two's complement integer (LONG1, LONG4), as a long when it fits, else a BigInteger.</summary>
    private static object Long(ReadOnlySpan<byte> bytes)
    {
        var v = new BigInteger(bytes, isUnsigned: false, isBigEndian: false);
        return v >= long.MinValue && v <= long.MaxValue ? (long)v : v;
    }
}
