// Writes real SSTables for the incremental-backup benchmark (npm run bench:incremental) with cassandra-all's
// CQLSSTableWriter, so a sandbox node can hold ~1 GiB of data after one `nodetool import` instead of hours of
// inserts. Compiled by bench/incremental.ts against the cached Cassandra jars; no build tool involved.
//
//   java Loader schema                                   prints the CREATE TABLE statement the data fits
//   java -Dcassandra.config=file:///<node>/cassandra.yaml Loader write <dir> <firstPartition> <partitions> <rowsPerPartition> <seed>
//                                                        writes <dir>/bench/events/*.db and prints the rows written
//
// Rows are random-ish but compressible like real rows: text drawn from a fixed vocabulary, a blob that is half
// random bytes and half a repeated pattern. The same arguments give the same bytes (a seeded generator), and
// partitions of different ranges never overlap, so a second run with another range adds only new rows.
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Date;
import java.util.SplittableRandom;

import org.apache.cassandra.config.DatabaseDescriptor;
import org.apache.cassandra.io.sstable.CQLSSTableWriter;

public final class Loader {
    static final String KEYSPACE = "bench";
    static final String TABLE = "events";
    // Compaction is off so the incremental backup sees exactly the SSTables the second load added: with it on,
    // a merge that happens to run between the two backups rewrites old rows into new files (that run uploads
    // them, as it should, but the figure then measures compaction, not the 1% of new rows).
    static final String SCHEMA = "CREATE TABLE " + KEYSPACE + "." + TABLE + " (" +
            "pk bigint, ck int, at timestamp, name text, body text, payload blob, " +
            "PRIMARY KEY (pk, ck)) WITH compaction = {'class': 'SizeTieredCompactionStrategy', 'enabled': 'false'}";
    static final String INSERT = "INSERT INTO " + KEYSPACE + "." + TABLE + " (pk, ck, at, name, body, payload) VALUES (?, ?, ?, ?, ?, ?)";

    public static void main(String[] args) throws Exception {
        if (args.length == 1 && args[0].equals("schema")) {
            System.out.println(SCHEMA);
            return;
        }
        if (args.length != 6 || !args[0].equals("write")) {
            System.err.println("usage: Loader schema | Loader write <dir> <firstPartition> <partitions> <rowsPerPartition> <seed>");
            System.exit(2);
        }
        Path dir = Path.of(args[1], KEYSPACE, TABLE);
        long first = Long.parseLong(args[2]);
        long partitions = Long.parseLong(args[3]);
        int rowsPerPartition = Integer.parseInt(args[4]);
        SplittableRandom random = new SplittableRandom(Long.parseLong(args[5]));
        Files.createDirectories(dir);

        // Client mode (CQLSSTableWriter's default) always writes 5.0's own SSTable version ("oa"); a node in 5.0's
        // default storage_compatibility_mode (CASSANDRA_4) lists only 4.x versions ("nb") and `nodetool import`
        // skips the others without a word. So the writer reads the node's own cassandra.yaml (-Dcassandra.config)
        // and writes what the node writes.
        if (System.getProperty("cassandra.config") != null) DatabaseDescriptor.toolInitialization();
        String[] words = vocabulary(new SplittableRandom(42), 4096);
        byte[] pattern = "cassandra-backup-restore-".repeat(24).getBytes(StandardCharsets.US_ASCII);
        CQLSSTableWriter writer = CQLSSTableWriter.builder()
                .inDirectory(dir.toString())
                .forTable(SCHEMA)
                .using(INSERT)
                // Buffered (unsorted) mode: partitions arrive in key order, not token order. SSTables of
                // about 128 MiB, like a node's flushes and first merges.
                .withMaxSSTableSizeInMiB(128)
                .build();
        long rows = 0;
        long start = System.nanoTime();
        StringBuilder body = new StringBuilder(1024);
        for (long pk = first; pk < first + partitions; pk++) {
            for (int ck = 0; ck < rowsPerPartition; ck++) {
                body.setLength(0);
                int n = 120 + random.nextInt(120);
                for (int w = 0; w < n; w++) body.append(words[random.nextInt(words.length)]).append(' ');
                byte[] payload = new byte[1024];
                byte[] noise = new byte[512];
                random.nextBytes(noise);
                System.arraycopy(noise, 0, payload, 0, 512);
                System.arraycopy(pattern, random.nextInt(pattern.length - 512), payload, 512, 512);
                writer.addRow(pk, ck, new Date(1_700_000_000_000L + pk * 1000 + ck), "user-" + (pk % 10_000), body.toString(), ByteBuffer.wrap(payload));
                rows++;
            }
        }
        writer.close();
        System.out.printf("%d rows in %.1f s%n", rows, (System.nanoTime() - start) / 1e9);
    }

    /** Pronounceable pseudo-words of 3 to 10 letters: text that compresses like prose, not like a repeated string. */
    static String[] vocabulary(SplittableRandom random, int size) {
        String consonants = "bcdfghjklmnprstvwz";
        String vowels = "aeiou";
        String[] words = new String[size];
        for (int i = 0; i < size; i++) {
            int len = 3 + random.nextInt(8);
            StringBuilder w = new StringBuilder(len);
            for (int j = 0; j < len; j++) {
                String from = j % 2 == 0 ? consonants : vowels;
                w.append(from.charAt(random.nextInt(from.length())));
            }
            words[i] = w.toString();
        }
        return words;
    }
}
