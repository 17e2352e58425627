package txingest.kstreams;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * The benchmark's reference loop on Kafka's Java client (bench/txn_scenario.py): one
 * transactional producer, sequential per-record transactions. Each: begin, three records
 * to output partition 0, input partition 0's next offset sent with the group metadata
 * of a real member of the group (a consumer subscribed to the input), commit. The same
 * loop in Python is bench/txn_loop.py; both print {@code RESULT} with each commit's
 * time, and the runner computes the rates the same way for both.
 *
 * <p>Run: {@code java -cp kstreams-peer.jar txingest.kstreams.TxnLoop '<json config>'}
 * with bootstrap, input, output, group, transactional_id, transactions and
 * retry_backoff_ms. Against a 4.x cluster with transaction.version 2 finalized the
 * client speaks transactions v2 (KIP-890) by itself.
 */
public final class TxnLoop {
    static final int RECORDS = 3;
    static final int POLL_EVERY = 100;  // transactions between polls that keep the member alive

    private TxnLoop() {
    }

    public static void main(String[] args) throws Exception {
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        JsonNode cfg = new ObjectMapper().readTree(args[0]);
        String input = cfg.get("input").asText();
        String output = cfg.get("output").asText();
        int transactions = cfg.get("transactions").asInt();
        try (KafkaConsumer<byte[], byte[]> member = new KafkaConsumer<>(consumerSettings(cfg));
             KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(producerSettings(cfg))) {
            member.subscribe(List.of(input));
            while (member.assignment().isEmpty()) {  // joined: the group metadata is real
                member.poll(Duration.ofMillis(100));
            }
            producer.initTransactions();
            TopicPartition source = new TopicPartition(input, 0);
            double[] committedAt = new double[transactions];
            long started = System.nanoTime();
            for (int i = 0; i < transactions; i++) {
                if (i % POLL_EVERY == 0) {
                    member.poll(Duration.ZERO);
                }
                producer.beginTransaction();
                for (int r = 0; r < RECORDS; r++) {
                    producer.send(new ProducerRecord<>(output, 0, null, value(i, r)));
                }
                producer.sendOffsetsToTransaction(
                        Map.of(source, new OffsetAndMetadata(i + 1)), member.groupMetadata());
                producer.commitTransaction();
                committedAt[i] = (System.nanoTime() - started) / 1e9;
            }
            System.out.println("RESULT " + result(committedAt));
        }
    }

    static byte[] value(int transaction, int record) {
        return ("{\"txn\":" + transaction + ",\"record\":" + record + "}")
                .getBytes(StandardCharsets.UTF_8);
    }

    static String result(double[] committedAt) {
        ObjectMapper json = new ObjectMapper();
        ObjectNode out = json.createObjectNode();
        out.put("client", "java");
        ArrayNode times = out.putArray("committed_at_s");
        for (double t : committedAt) {
            times.add(t);
        }
        return out.toString();
    }

    static Properties consumerSettings(JsonNode cfg) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, cfg.get("bootstrap").asText());
        p.put(ConsumerConfig.GROUP_ID_CONFIG, cfg.get("group").asText());
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        return p;
    }

    static Properties producerSettings(JsonNode cfg) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, cfg.get("bootstrap").asText());
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, cfg.get("transactional_id").asText());
        p.put(ProducerConfig.RETRY_BACKOFF_MS_CONFIG, cfg.get("retry_backoff_ms").asText());
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        return p;
    }
}
