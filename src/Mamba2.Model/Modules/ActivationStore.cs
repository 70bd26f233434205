using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Modules;

/// <summary>What a module's forward keeps for its backward: everything added with <see cref="Keep"/> is freed together, newest first.</summary>
public abstract class ActivationStore : IDisposable
{
    private readonly List<IDisposable> _owned = [];

    internal T Keep<T>(T d)
        where T : IDisposable
    {
        _owned.Add(d);
        return d;
    }

    /// <summary>Hands <paramref name="d"/> (kept here) to the caller, who frees it: for what no backward reads.</summary>
    internal T Release<T>(T d)
        where T : IDisposable
    {
        if (!_owned.Remove(d))
        {
            throw new InvalidOperationException("ActivationStore.Release: not kept here.");
        }

        return d;
    }

    /// <summary>
    /// An op's results freed once <paramref name="st"/> has run, but those handed to the caller, who frees them: the
    /// small parameter gradients a backward returns go straight into the gradient set, no copy recorded.
    /// </summary>
    internal static void OwnAllBut(CommandStream st, IEnumerable<Tensor> results, params Tensor?[] handedOut)
    {
        foreach (var t in results)
        {
            if (!handedOut.Contains(t))
            {
                st.Own(t);
            }
        }
    }

    /// <summary>A copy of <paramref name="src"/> recorded into <paramref name="st"/> (optionally under another shape of the same size).</summary>
    internal static Tensor CopyOf(CommandStream st, Tensor src, string name, int[]? shape = null)
    {
        var t = Tensor.Empty(src.Device, name, shape ?? [.. src.Shape]);
        st.Copy(src.Buffer, 0, t.Buffer, 0, t.Buffer.SizeBytes);
        return t;
    }

    public void Dispose()
    {
        for (var i = _owned.Count - 1; i >= 0; i--)
        {
            _owned[i].Dispose();
        }

        _owned.Clear();
    }
}
