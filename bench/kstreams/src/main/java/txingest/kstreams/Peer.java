package txingest.kstreams;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.http.HttpClient;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HexFormat;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;

/**
 * The benchmark's Kafka Streams peer: the service's job as a plain Kafka Streams app.
 * Each input record names a file; the processor downloads it (blocking, in the stream
 * thread), parses and validates every transaction and forwards one output record per
 * transaction, keyed by the URL with the service's six headers; a file that cannot be
 * used goes to the dead-letter topic. exactly_once_v2 commits outputs and offsets in one
 * transaction per commit interval.
 *
 * <p>Run: {@code java -jar kstreams-peer.jar '<json config>'} with bootstrap, input,
 * output, dlq, group (the application.id), state_dir and threads. With {@code --check}
 * it reads input record values from stdin, one a line, and prints what one attempt at
 * each gives, without Kafka (bench/kstreams_parity.py compares that with the service).
 */
public final class Peer {
    static final int MAX_ATTEMPTS = 5;        // the service's MAX_ATTEMPTS
    static final long MAX_RECORD_BYTES = 1_000_000;
    static final int RECORD_OVERHEAD = 64;   // framing the broker counts (app/files/prepare.py)

    private Peer() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length == 1 && args[0].equals("--check")) {
            check();
            return;
        }
        // Before any logger exists: Kafka's INFO lines would cost more than the job.
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        // It warns at every start about global state stores, which this app has none of.
        System.setProperty("org.slf4j.simpleLogger.log.org.apache.kafka.streams.StreamsConfig",
                "error");
        JsonNode cfg = new ObjectMapper().readTree(args[0]);
        KafkaStreams streams = new KafkaStreams(topology(cfg), settings(cfg));
        CountDownLatch ended = new CountDownLatch(1);
        AtomicBoolean stopping = new AtomicBoolean();
        streams.setStateListener((now, before) -> {
            System.out.println("kstreams-peer: state " + before + " -> " + now);
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
                ended.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(error -> {
            error.printStackTrace();
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {  // SIGTERM: the bench's stop
            stopping.set(true);
            boolean closed = streams.close(Duration.ofSeconds(30));
            ended.countDown();
            Runtime.getRuntime().halt(closed ? 0 : 1);  // a clean stop exits 0, not 143
        }));
        streams.start();
        ended.await();
        if (!stopping.get()) {  // failed on its own
            streams.close(Duration.ofSeconds(30));
            System.exit(1);
        }
    }

    /** Per stdin line: OK and each value in hex, or POISON / TRANSIENT and the reason. */
    static void check() throws Exception {
        HttpClient http = client();
        var in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line; (line = in.readLine()) != null; ) {
            StringBuilder out = new StringBuilder("OK");
            try {
                String url = Transactions.inputUrl(line.getBytes(StandardCharsets.UTF_8));
                for (byte[] value : Transactions.parse(Transactions.download(http, url))) {
                    out.append(' ').append(HexFormat.of().formatHex(value));
                }
            } catch (Transactions.Poison e) {
                out = new StringBuilder("POISON " + e.reason);
            } catch (Transactions.Transient e) {
                out = new StringBuilder("TRANSIENT " + e.reason);
            }
            System.out.println(out);
        }
    }

    static HttpClient client() {
        return HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1)
                .connectTimeout(Duration.ofSeconds(10))
                .followRedirects(HttpClient.Redirect.NORMAL).build();
    }

    static Properties settings(JsonNode cfg) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, cfg.get("group").asText());
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, cfg.get("bootstrap").asText());
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, cfg.path("threads").asInt(1));
        p.put(StreamsConfig.STATE_DIR_CONFIG, cfg.get("state_dir").asText());
        p.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
        p.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        // The service's TRANSACTION_TIMEOUT_MS: a download runs inside the open transaction.
        p.put(StreamsConfig.producerPrefix(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG), 120_000);
        return p;
    }

    static Topology topology(JsonNode cfg) {
        HttpClient http = client();
        Topology topology = new Topology();
        topology.addSource("input", new ByteArrayDeserializer(), new ByteArrayDeserializer(),
                cfg.get("input").asText());
        topology.addProcessor("files", () -> new FileProcessor(http), "input");
        topology.addSink("output", cfg.get("output").asText(), new ByteArraySerializer(),
                new ByteArraySerializer(), "files");
        topology.addSink("dlq", cfg.get("dlq").asText(), new ByteArraySerializer(),
                new ByteArraySerializer(), "files");
        return topology;
    }

    /** One input record in, its transactions (or one dead letter) out. */
    static final class FileProcessor implements Processor<byte[], byte[], byte[], byte[]> {
        private static final ObjectMapper JSON = new ObjectMapper();
        private final HttpClient http;
        private ProcessorContext<byte[], byte[]> context;

        FileProcessor(HttpClient http) {
            this.http = http;
        }

        @Override
        public void init(ProcessorContext<byte[], byte[]> context) {
            this.context = context;
        }

        @Override
        public void process(Record<byte[], byte[]> record) {
            RecordMetadata source = context.recordMetadata().orElseThrow();
            String url = null;
            int attempt = 0;
            while (true) {
                attempt++;
                try {
                    url = url == null ? Transactions.inputUrl(record.value()) : url;
                    List<byte[]> items = Transactions.parse(Transactions.download(http, url));
                    forward(record, source, url, items);
                    return;
                } catch (Transactions.Poison e) {
                    deadLetter(record, source, url, e.reason, e.getMessage(), attempt);
                    return;
                } catch (Transactions.Transient e) {
                    if (attempt >= MAX_ATTEMPTS) {
                        deadLetter(record, source, url, e.reason, e.getMessage(), attempt);
                        return;
                    }
                    sleep(backoffMs(attempt));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new IllegalStateException("interrupted while downloading", e);
                }
            }
        }

        private static long backoffMs(int attempt) {  // 0.5 s doubling, at most 30 s
            return (long) Math.min(30_000, 500 * Math.pow(2, attempt - 1));
        }

        private static void sleep(long ms) {
            try {
                Thread.sleep(ms);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted in a retry backoff", e);
            }
        }

        private void forward(Record<byte[], byte[]> record, RecordMetadata source, String url,
                             List<byte[]> items) throws Transactions.Poison {
            byte[] key = url.getBytes(StandardCharsets.UTF_8);
            Header[] base = sourceHeaders(source, url);
            Header count = new RecordHeader("count", bytes(items.size()));
            long fixed = key.length + "count".length() + count.value().length + "index".length();
            for (Header h : base) {
                fixed += h.key().length() + h.value().length;
            }
            for (int i = 0; i < items.size(); i++) {  // the whole file first, as the service
                long size = fixed + items.get(i).length + String.valueOf(i).length();
                if (size + RECORD_OVERHEAD > MAX_RECORD_BYTES) {
                    throw new Transactions.Poison("record_too_large", "transaction " + i
                            + " makes a record of " + size + " bytes");
                }
            }
            for (int i = 0; i < items.size(); i++) {
                RecordHeaders headers = new RecordHeaders(new Header[] {base[0], base[1], base[2],
                        base[3], new RecordHeader("index", bytes(i)), count});
                context.forward(new Record<>(key, items.get(i), record.timestamp(), headers),
                        "output");
            }
        }

        private void deadLetter(Record<byte[], byte[]> record, RecordMetadata source, String url,
                                String reason, String error, int attempts) {
            ObjectNode value = JSON.createObjectNode();
            value.put("url", url).put("reason", reason).put("error", error)
                    .put("attempts", attempts);
            value.putObject("source").put("topic", source.topic())
                    .put("partition", source.partition()).put("offset", source.offset());
            byte[] input = record.value();
            value.putObject("input").put("value", input == null ? null
                    : new String(input, StandardCharsets.UTF_8)).put("encoding", "utf-8");
            Header[] base = sourceHeaders(source, url);
            RecordHeaders headers = new RecordHeaders(url == null
                    ? new Header[] {base[0], base[1], base[2]} : base);
            try {
                context.forward(new Record<>(record.key(), JSON.writeValueAsBytes(value),
                        record.timestamp(), headers), "dlq");
            } catch (JsonProcessingException e) {
                throw new IllegalStateException(e);
            }
        }

        private static Header[] sourceHeaders(RecordMetadata source, String url) {
            return new Header[] {
                new RecordHeader("source-topic", source.topic().getBytes(StandardCharsets.UTF_8)),
                new RecordHeader("source-partition", bytes(source.partition())),
                new RecordHeader("source-offset", bytes(source.offset())),
                new RecordHeader("source-url", url == null ? new byte[0]
                        : url.getBytes(StandardCharsets.UTF_8)),
            };
        }

        private static byte[] bytes(long n) {
            return Long.toString(n).getBytes(StandardCharsets.US_ASCII);
        }
    }
}
