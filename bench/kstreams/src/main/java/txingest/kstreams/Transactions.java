package txingest.kstreams;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.json.JsonWriteFeature;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.core.exc.StreamConstraintsException;
import com.fasterxml.jackson.core.util.ByteArrayBuilder;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.cfg.JsonNodeFeature;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.net.URISyntaxException;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpTimeoutException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.regex.Pattern;
import java.util.zip.GZIPInputStream;
import java.util.zip.InflaterInputStream;
import java.util.zip.ZipException;

/**
 * What the service does to one input record outside its transaction, with the service's
 * default limits: the URL the record names (app/files/input_url.py, parse_input_url), the
 * file's decoded body (app/files/fetch.py, app/files/decode.py) and its transactions
 * (app/files/parse.py, parse_transactions).
 */
final class Transactions {
    static final int MAX_DEPTH = 64;               // the item object counts as 1
    static final int MAX_ITEMS = 1_000_000;        // MAX_TRANSACTIONS_PER_FILE
    static final int MAX_FILE_BYTES = 64 << 20;    // MAX_FILE_BYTES, after decompression
    static final Duration TIMEOUT = Duration.ofSeconds(120);

    /** The same bytes always fail the same way: dead-lettered at once. */
    static final class Poison extends Exception {
        final String reason;

        Poison(String reason, String message) {
            super(message, null, false, false);
            this.reason = reason;
        }
    }

    /** Worth another attempt: a connection error, a timeout, a 5xx. */
    static final class Transient extends Exception {
        final String reason;

        Transient(String reason, String message) {
            super(message, null, false, false);
            this.reason = reason;
        }
    }

    private static final Pattern BAD_URL_CHAR = Pattern.compile("[\\s\\x00-\\x1f\\x7f-\\x9f]");
    private static final ObjectMapper LINES = mapper(MAX_DEPTH);
    private static final ObjectMapper ARRAYS = mapper(MAX_DEPTH + 1);  // + the file's array

    private Transactions() {
    }

    private static ObjectMapper mapper(int depth) {
        JsonFactory factory = JsonFactory.builder().streamReadConstraints(
                StreamReadConstraints.builder().maxNestingDepth(depth).build())
                .disable(JsonWriteFeature.WRITE_HEX_UPPER_CASE)  // \u001f, as the service
                .build();
        ObjectMapper mapper = new ObjectMapper(factory);
        // Numbers stay as written (1.50 is not 1.5): money is never a double.
        mapper.enable(DeserializationFeature.USE_BIG_DECIMAL_FOR_FLOATS,
                DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
        mapper.configure(JsonNodeFeature.STRIP_TRAILING_BIGDECIMAL_ZEROES, false);
        mapper.setNodeFactory(JsonNodeFactory.withExactBigDecimals(true));
        return mapper;
    }

    /** The file URL an input record carries: plain text, a JSON string or {"url": ...}. */
    static String inputUrl(byte[] value) throws Poison {
        if (value == null || value.length == 0) {
            throw bad("record value is empty");
        }
        String text;
        try {
            text = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(value)).toString().strip();
        } catch (CharacterCodingException e) {
            throw bad("record value is not valid UTF-8");
        }
        if (text.isEmpty()) {
            throw bad("record value is blank");
        }
        String url = text;
        JsonNode doc = null;
        try {
            doc = LINES.readTree(text);
        } catch (JsonProcessingException e) {
            if ("\"{[".indexOf(text.charAt(0)) >= 0) {  // meant as JSON: not a URL
                throw bad("record value is malformed JSON");
            }
        }
        if (doc != null && doc.isObject()) {
            JsonNode field = doc.get("url");
            if (field == null || !field.isTextual()) {
                throw bad("JSON object has no string 'url' field");
            }
            url = field.textValue();
        } else if (doc != null && doc.isTextual()) {
            url = doc.textValue();
        } else if (doc != null) {
            throw bad("record value is a JSON " + doc.getNodeType() + ", expected a URL");
        }
        checkUrl(url);
        return url;
    }

    private static void checkUrl(String url) throws Poison {
        if (BAD_URL_CHAR.matcher(url).find()) {
            throw bad("URL has whitespace or a control character");
        }
        URI uri;
        try {
            uri = new URI(url);
        } catch (URISyntaxException e) {
            throw bad("URL is malformed: " + e.getMessage());
        }
        String scheme = uri.getScheme() == null ? "" : uri.getScheme();
        if (!scheme.equals("http") && !scheme.equals("https")) {
            throw bad("URL scheme '" + scheme + "' is not http or https");
        }
        if (uri.getHost() == null) {
            throw bad("URL has no host");
        }
    }

    private static Poison bad(String message) {
        return new Poison("invalid_input_record", message);
    }

    /** The decoded body: Content-Encoding first, then a gzip file inside. Blocking. */
    static byte[] download(HttpClient http, String url) throws Poison, Transient,
            InterruptedException {
        HttpRequest request = HttpRequest.newBuilder(URI.create(url)).timeout(TIMEOUT)
                .header("Accept-Encoding", "gzip, deflate").GET().build();
        HttpResponse<InputStream> response;
        try {
            response = http.send(request, HttpResponse.BodyHandlers.ofInputStream());
        } catch (HttpTimeoutException e) {
            throw new Transient("download_timeout", "timed out: " + url);
        } catch (IOException e) {
            throw new Transient("connection_error", e + ": " + url);
        }
        byte[] raw;
        try (InputStream body = response.body()) {
            int status = response.statusCode();
            if (status == 408 || status == 429 || status >= 500 && status < 600) {
                throw new Transient("http_transient", "HTTP " + status + " from " + url);
            }
            if (status < 200 || status >= 300) {
                throw new Poison("http_error", "HTTP " + status + " from " + url);
            }
            raw = readCapped(body, url);
        } catch (IOException e) {
            throw new Transient("truncated_body", e + " mid-body: " + url);
        }
        String coding = response.headers().firstValue("Content-Encoding").orElse("")
                .strip().toLowerCase();
        byte[] decoded = switch (coding) {
            case "", "identity" -> raw;
            case "gzip", "x-gzip" -> inflate(raw, true, url);
            case "deflate" -> inflate(raw, false, url);
            default -> throw new Poison("bad_gzip", "unsupported Content-Encoding " + coding);
        };
        boolean gzipFile = decoded.length >= 2 && (decoded[0] & 0xff) == 0x1f
                && (decoded[1] & 0xff) == 0x8b;
        return gzipFile ? inflate(decoded, true, url) : decoded;
    }

    private static byte[] inflate(byte[] data, boolean gzip, String url) throws Poison {
        try (InputStream in = gzip ? new GZIPInputStream(new ByteArrayInputStream(data), 65536)
                : new InflaterInputStream(new ByteArrayInputStream(data))) {
            return readCapped(in, url);
        } catch (ZipException | EOFException e) {  // truncated or corrupt: never a whole file
            throw new Poison("bad_gzip", "corrupt stream (" + e.getMessage() + "): " + url);
        } catch (IOException e) {
            throw new IllegalStateException(e);  // in-memory streams fail only as above
        }
    }

    private static byte[] readCapped(InputStream in, String url) throws IOException, Poison {
        ByteArrayOutputStream out = new ByteArrayOutputStream(1 << 16);
        byte[] buffer = new byte[1 << 16];
        for (int n; (n = in.read(buffer)) != -1; ) {
            if (out.size() + n > MAX_FILE_BYTES) {
                throw new Poison("file_too_large",
                        "decoded body exceeds " + MAX_FILE_BYTES + " bytes: " + url);
            }
            out.write(buffer, 0, n);
        }
        return out.toByteArray();
    }

    /**
     * The file's transactions, each as compact JSON with the source's keys, order and
     * numbers: a JSON array of objects, or NDJSON. The whole file is poison if any is.
     */
    static List<byte[]> parse(byte[] body) throws Poison {
        int start = body.length >= 3 && (body[0] & 0xff) == 0xef && (body[1] & 0xff) == 0xbb
                && (body[2] & 0xff) == 0xbf ? 3 : 0;  // a UTF-8 BOM carries no data
        int first = start;
        while (first < body.length && isSpace(body[first])) {
            first++;
        }
        if (first == body.length) {
            return List.of();
        }
        return body[first] == '[' ? array(body, first) : ndjson(body, start);
    }

    private static boolean isSpace(byte b) {
        return b == ' ' || b == '\t' || b == '\r' || b == '\n';
    }

    private static List<byte[]> ndjson(byte[] body, int start) throws Poison {
        List<byte[]> items = new ArrayList<>();
        int lineno = 0;
        for (int from = start; from < body.length; ) {
            int end = from;
            while (end < body.length && body[end] != '\n') {
                end++;
            }
            lineno++;
            int a = from, b = end;
            while (a < b && isSpace(body[a])) {
                a++;
            }
            while (b > a && isSpace(body[b - 1])) {
                b--;
            }
            if (a < b) {
                if (items.size() >= MAX_ITEMS) {
                    throw tooMany();
                }
                items.add(item(LINES, body, a, b, "line " + lineno));
            }
            from = end + 1;
        }
        return items;
    }

    private static List<byte[]> array(byte[] body, int first) throws Poison {
        List<byte[]> items = new ArrayList<>();
        try (JsonParser parser = ARRAYS.createParser(body, first, body.length - first)) {
            parser.nextToken();  // the array
            for (JsonToken t; (t = parser.nextToken()) != JsonToken.END_ARRAY; ) {
                String where = "item " + (items.size() + 1) + " of the array";
                if (t != JsonToken.START_OBJECT) {
                    throw new Poison("not_an_object", where + ": expected a JSON object");
                }
                if (items.size() >= MAX_ITEMS) {
                    throw tooMany();
                }
                int from = first + (int) parser.currentTokenLocation().getByteOffset();
                parser.skipChildren();
                int to = first + (int) parser.currentLocation().getByteOffset();
                items.add(item(LINES, body, from, to, where));
            }
            if (parser.nextToken() != null) {
                throw new Poison("invalid_json", "the array: data after its end");
            }
        } catch (StreamConstraintsException e) {
            throw nesting("the array");
        } catch (IOException e) {  // Jackson's JsonProcessingException and kin
            throw invalid("the array", e);
        }
        return items;
    }

    /**
     * One item of body[from, to): parsed whole (validated: an object, no deeper than
     * MAX_DEPTH) and written back compactly. When that equals the source, the source is
     * the value; otherwise a token-by-token copy that keeps each number's own text.
     */
    private static byte[] item(ObjectMapper mapper, byte[] body, int from, int to, String where)
            throws Poison {
        JsonNode node;
        byte[] compact;
        try {
            node = mapper.readTree(body, from, to - from);
            if (node == null || !node.isObject()) {
                throw new Poison("not_an_object", where + ": expected a JSON object");
            }
            compact = mapper.writeValueAsBytes(node);
        } catch (StreamConstraintsException e) {
            throw nesting(where);
        } catch (IOException e) {
            throw invalid(where, e);
        }
        if (Arrays.equals(compact, 0, compact.length, body, from, to)) {
            return compact;
        }
        return exactCopy(mapper, body, from, to, where);
    }

    private static byte[] exactCopy(ObjectMapper mapper, byte[] body, int from, int to,
                                    String where) throws Poison {
        ByteArrayBuilder out = new ByteArrayBuilder();
        try (JsonParser parser = mapper.createParser(body, from, to - from);
             JsonGenerator gen = mapper.createGenerator(out)) {
            for (JsonToken t; (t = parser.nextToken()) != null; ) {
                if (t == JsonToken.VALUE_NUMBER_INT || t == JsonToken.VALUE_NUMBER_FLOAT) {
                    gen.writeNumber(parser.getText());
                } else {
                    gen.copyCurrentEvent(parser);
                }
            }
        } catch (IOException e) {
            throw new Poison("invalid_json", where + ": " + e.getMessage());
        }
        return out.toByteArray();
    }

    private static Poison invalid(String where, IOException e) {
        String message = e.getMessage();
        boolean utf8 = message != null && message.startsWith("Invalid UTF-8");
        return new Poison(utf8 ? "invalid_utf8" : "invalid_json", where + ": " + message);
    }

    private static Poison tooMany() {
        return new Poison("too_many_transactions", "file has more than " + MAX_ITEMS
                + " transactions");
    }

    private static Poison nesting(String where) {
        return new Poison("nesting_too_deep", where + ": nesting is deeper than " + MAX_DEPTH
                + " levels");
    }
}
