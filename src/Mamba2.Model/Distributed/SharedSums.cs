using System.IO.MemoryMappedFiles;
using System.Numerics;
using System.Numerics.Tensors;

namespace Mamba2.Model.Distributed;

/// <summary>
/// Sums float vectors over the ranks of one host through a file in shared memory (/dev/shm) that every rank maps,
/// instead of MPI's all-reduce: each rank copies its values in (weighted), sums its slice of every rank's copy, then
/// reads the whole sum back, each pass on all of the rank's cores. Each element is summed once, in rank order, so
/// every rank gets the same bits. <see cref="Open"/> is collective; so is every <see cref="SumInPlace"/>.
/// </summary>
public sealed unsafe class SharedSums : IDisposable
{
    /// <summary>Environment variable: <c>mpi</c> sums with MPI's all-reduce even where the ranks share a host (default <c>auto</c>).</summary>
    public const string Variable = "MAMBA2_MPI_SUMS";

    private const string Directory = "/dev/shm";
    private const int Chunk = 1 << 18;   // floats a task copies or sums at a time (1 MiB)

    private readonly Communicator _comm;
    private readonly MemoryMappedFile _file;
    private readonly MemoryMappedViewAccessor _view;
    private readonly float* _copies;   // rank r's copy at _copies + r * Length
    private bool _disposed;

    private SharedSums(Communicator comm, long length, MemoryMappedFile file, MemoryMappedViewAccessor view)
    {
        _comm = comm;
        Length = length;
        _file = file;
        _view = view;
        byte* p = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _copies = (float*)(p + view.PointerOffset);
    }

    /// <summary>Floats each rank's copy holds.</summary>
    public long Length { get; }

    /// <summary>Threads each pass runs on (the cores this rank may use).</summary>
    public static int Threads => Environment.ProcessorCount;

    /// <summary>
    /// Shared sums of <paramref name="length"/> floats for every rank of <paramref name="comm"/>, or null with the
    /// reason in <paramref name="why"/>: one rank, ranks on more than one host, <see cref="Variable"/> set to
    /// <c>mpi</c>, or no room in /dev/shm. Every rank must call it; all get the same answer.
    /// </summary>
    public static SharedSums? Open(Communicator comm, long length, out string? why)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        if (comm.Size == 1)
        {
            why = "one rank";
            return null;
        }

        var bytes = length * sizeof(float) * comm.Size;
        var setting = Environment.GetEnvironmentVariable(Variable)?.Trim().ToLowerInvariant();
        if (setting is not (null or "" or "auto" or "mpi"))
        {
            throw new ArgumentException($"{Variable}={setting}: expected auto (shared memory where the ranks share a host) or mpi.");
        }

        var wanted = setting != "mpi" && comm.LocalSize == comm.Size;
        var room = comm.IsRoot && System.IO.Directory.Exists(Directory) && new DriveInfo(Directory).AvailableFreeSpace >= bytes + (bytes / 8);
        // One agreement for all: whether every rank wants it, rank 0's verdict on the room, and a name rank 0 draws.
        double[] agree = [wanted ? 1 : 0, room ? 1 : 0, comm.IsRoot ? Random.Shared.NextInt64(1L << 52) : 0];
        comm.SumInPlace(agree);
        if (agree[0] < comm.Size || agree[1] < 1)
        {
            why = setting == "mpi" ? $"{Variable}=mpi"
                : agree[0] < comm.Size ? "the ranks span more than one host"
                : $"{Directory} lacks {bytes / 1048576.0:F0} MiB (and an eighth more) for {comm.Size} copies";
            return null;
        }

        var path = Path.Combine(Directory, $"mamba2-sums-{(long)agree[2]:x}");
        FileStream? stream = null;
        MemoryMappedFile? file = null;
        MemoryMappedViewAccessor? view = null;
        string? failed = null;
        try
        {
            if (comm.IsRoot)
            {
                stream = new FileStream(path, new FileStreamOptions
                {
                    Mode = FileMode.CreateNew,
                    Access = FileAccess.ReadWrite,
                    Share = FileShare.ReadWrite,
                    PreallocationSize = bytes,
                });
                stream.SetLength(bytes);
            }
        }
        catch (IOException e)
        {
            failed = e.Message;
            if (stream is not null)
            {
                stream.Dispose();
                stream = null;
                File.Delete(path);   // created, but without its room
            }
        }

        double[] created = [failed is null ? 0 : 1];
        comm.SumInPlace(created);
        if (created[0] == 0)
        {
            try
            {
                stream ??= new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
                file = MemoryMappedFile.CreateFromFile(stream, null, bytes, MemoryMappedFileAccess.ReadWrite, HandleInheritability.None, leaveOpen: false);
                stream = null;
                view = file.CreateViewAccessor(0, bytes, MemoryMappedFileAccess.ReadWrite);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                failed = e.Message;
            }
        }

        double[] mapped = [failed is null ? 0 : 1];
        comm.SumInPlace(mapped);   // every rank has mapped it (or given up) before the name goes
        if (comm.IsRoot && created[0] == 0)
        {
            File.Delete(path);   // the mappings stay; from here on nothing is left behind when a rank dies
        }

        if (mapped[0] > 0)
        {
            view?.Dispose();
            file?.Dispose();
            stream?.Dispose();
            why = $"shared memory in {Directory} could not be set up on {mapped[0]} rank(s)" + (failed is null ? "" : $" ({failed})");
            return null;
        }

        why = null;
        return new SharedSums(comm, length, file!, view!);
    }

    /// <summary>
    /// Every rank's <paramref name="values"/> (the floats at <paramref name="offset"/> of the vector), each weighted by
    /// its rank's <paramref name="weight"/>, summed in rank order into every rank's <paramref name="values"/>. Every rank
    /// calls it with the same offset and length.
    /// </summary>
    public void SumInPlace(Span<float> values, long offset, float weight)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (offset < 0 || offset + values.Length > Length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"SharedSums: {values.Length} floats at {offset} do not fit in {Length}.");
        }

        var n = values.Length;
        var (rank, size) = (_comm.Rank, _comm.Size);
        fixed (float* mine = values)
        {
            var own = _copies + (rank * Length) + offset;
            var first = _copies + offset;   // rank 0's copy: where the sums go
            var from = mine;
            Chunks(0, n, (at, count) => TensorPrimitives.Multiply(new ReadOnlySpan<float>(from + at, count), weight, new Span<float>(own + at, count)));
            _comm.Barrier();

            // This rank's slice, in whole vectors, summed over the copies in rank order.
            var per = (n / size) - (n / size % Vector<float>.Count);
            var start = rank * per;
            var end = rank == size - 1 ? n : start + per;
            var copies = _copies;
            var length = Length;
            Chunks(start, end - start, (at, count) =>
            {
                var sum = new Span<float>(first + at, count);
                for (var r = 1; r < size; r++)
                {
                    TensorPrimitives.Add(sum, new ReadOnlySpan<float>(copies + (r * length) + offset + at, count), sum);
                }
            });
            _comm.Barrier();

            Chunks(0, n, (at, count) => new ReadOnlySpan<float>(first + at, count).CopyTo(new Span<float>(from + at, count)));
            _comm.Barrier();   // rank 0's copy is read by every rank before any rank writes these floats again
        }
    }

    private static void Chunks(long start, long count, Action<long, int> body)
    {
        var chunks = (count + Chunk - 1) / Chunk;
        Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = Threads }, c =>
        {
            var at = start + (c * Chunk);
            body(at, (int)Math.Min(Chunk, start + count - at));
        });
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file.Dispose();
    }
}
