using System.Runtime.InteropServices;
using System.Text;

namespace Mamba2.Model.IO;

/// <summary>
/// Writes that survive a power loss, not only a killed process: a file is written beside its name, flushed to
/// disk, renamed into place, and the directory that holds the name is flushed too (a rename lives in the
/// directory's own data). On Windows, where a directory cannot be flushed this way, the directory step is skipped.
/// </summary>
public static partial class DurableFiles
{
    /// <summary>Replaces <paramref name="path"/> with <paramref name="text"/> (UTF-8), atomically and durably.</summary>
    public static void WriteAllText(string path, string text) => Write(path, stream => stream.Write(Encoding.UTF8.GetBytes(text)));

    /// <summary>
    /// Replaces <paramref name="path"/> with what <paramref name="write"/> writes, atomically and durably: a crash
    /// or a power loss leaves the old file or the complete new one, and a failed write leaves no temporary file.
    /// </summary>
    public static void Write(string path, Action<Stream> write)
    {
        var temp = $"{path}.tmp-{Environment.ProcessId}";
        try
        {
            using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }

            File.Move(temp, path, overwrite: true);
            SyncDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        }
        catch
        {
            // Exists first: Delete throws when the directory is missing, which would hide the real error.
            if (File.Exists(temp))
            {
                File.Delete(temp);
            }

            throw;
        }
    }

    /// <summary>
    /// Replaces the directory <paramref name="directory"/> with what <paramref name="write"/> puts into the (new, empty)
    /// directory it is given: written beside as "NAME.tmp-ID", the old one (if any) renamed "NAME.old-ID", the new one
    /// renamed into place, the parent flushed, the old one removed. A crash leaves the old directory or the complete
    /// new one (and a .tmp- or .old- sibling to clean up); a failed write leaves no temporary directory.
    /// </summary>
    public static void WriteDirectory(string directory, Action<string> write)
    {
        var full = Path.GetFullPath(directory).TrimEnd(Path.DirectorySeparatorChar);
        var parent = Path.GetDirectoryName(full)!;
        var id = Guid.NewGuid().ToString("N");
        var temp = $"{full}.tmp-{id}";
        try
        {
            Directory.CreateDirectory(temp);
            write(temp);
            string? old = null;
            if (Directory.Exists(full))
            {
                old = $"{full}.old-{id}";
                Directory.Move(full, old);
            }

            Directory.Move(temp, full);
            SyncDirectory(parent);
            if (old is not null)
            {
                Directory.Delete(old, recursive: true);
            }
        }
        finally
        {
            if (Directory.Exists(temp))
            {
                Directory.Delete(temp, recursive: true);
            }
        }
    }

    /// <summary>Flushes a directory's entries (names created, renamed or removed in it) to disk.</summary>
    public static void SyncDirectory(string directory)
    {
        if (OperatingSystem.IsWindows())
        {
            return;
        }

        const int ReadOnly = 0;
        var directoryFlag = OperatingSystem.IsMacOS() ? 0x100000 : 0x10000;   // O_DIRECTORY
        var fd = Open(directory, ReadOnly | directoryFlag);
        if (fd < 0)
        {
            throw new IOException($"{directory}: cannot open the directory to flush it (errno {Marshal.GetLastPInvokeError()}).");
        }

        try
        {
            if (Fsync(fd) != 0)
            {
                throw new IOException($"{directory}: flushing the directory failed (errno {Marshal.GetLastPInvokeError()}).");
            }
        }
        finally
        {
            _ = Close(fd);
        }
    }

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);
}
