import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import javax.management.MBeanServerConnection;
import javax.management.ObjectName;
import javax.management.remote.JMXConnector;
import javax.management.remote.JMXConnectorFactory;
import javax.management.remote.JMXServiceURL;

/**
 * cbr's JMX client: the StorageService operations cbr uses, with the JDK alone (no Cassandra jars, so it starts
 * in a fraction of a second), serving many requests in one JVM.
 *
 * Protocol (JSON lines, UTF-8). The first line on stdin is the connection:
 *   {"host":"127.0.0.1","port":7199,"user":"u","password":"p"}   (user and password optional)
 * then one request per line: {"id":1,"op":"snapshot","tag":"b1"}. Each answer is one line on stdout:
 *   {"id":1,"ok":true,"result":...} or {"id":1,"ok":false,"error":"reason"}.
 * Requests are served one at a time, in order. End of stdin ends the process. Credentials never go on the
 * command line. The operations and their options are those nodetool 5.0 sends (see the README).
 */
public final class CbrJmx {
  private static final String SS = "org.apache.cassandra.db:type=StorageService";
  private static final String STRINGS = "[Ljava.lang.String;";
  private static final String[] NONE = new String[0];

  private final String host;
  private final int port;
  private final String user;
  private final String password;
  private JMXConnector connector;
  private MBeanServerConnection mbs;

  private CbrJmx(Map<String, Object> conf) {
    host = str(conf, "host", "127.0.0.1");
    port = ((Number) conf.getOrDefault("port", 7199)).intValue();
    user = str(conf, "user", null);
    password = str(conf, "password", null);
  }

  public static void main(String[] args) throws IOException {
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
    String first = in.readLine();
    if (first == null) return;
    CbrJmx client = new CbrJmx(asMap(new Json(first).value()));
    for (String line; (line = in.readLine()) != null; ) {
      if (line.isBlank()) continue;
      Object id = null;
      StringBuilder answer = new StringBuilder();
      try {
        Map<String, Object> req = asMap(new Json(line).value());
        id = req.get("id");
        Object result = client.serve(req);
        answer.append("{\"id\":").append(Json.write(id)).append(",\"ok\":true,\"result\":").append(Json.write(result)).append('}');
      } catch (Exception e) {
        answer.setLength(0);
        answer.append("{\"id\":").append(Json.write(id)).append(",\"ok\":false,\"error\":").append(Json.write(reason(e))).append('}');
      }
      out.println(answer);
    }
    client.disconnect();
    System.exit(0);
  }

  private Object serve(Map<String, Object> req) throws Exception {
    String op = str(req, "op", "");
    switch (op) {
      case "ping":
        return "pong";
      case "status":
        return status();
      case "snapshot": {
        // nodetool snapshot -t <tag>: all keyspaces, skipFlush=false, no ttl.
        Map<String, String> options = new HashMap<>();
        options.put("skipFlush", "false");
        invoke("takeSnapshot", new Object[] {tag(req), options, NONE}, "java.lang.String", "java.util.Map", STRINGS);
        return null;
      }
      case "clearSnapshot":
        // nodetool clearsnapshot -t <tag>: all keyspaces, no older_than options.
        invoke("clearSnapshot", new Object[] {new HashMap<String, Object>(), tag(req), NONE}, "java.util.Map", "java.lang.String", STRINGS);
        return null;
      case "listSnapshots": {
        // nodetool listsnapshots: no_ttl=false, include_ephemeral=false; the map's keys are the tags.
        Map<String, String> options = new HashMap<>();
        options.put("no_ttl", "false");
        options.put("include_ephemeral", "false");
        Map<?, ?> details = (Map<?, ?>) invoke("getSnapshotDetails", new Object[] {options}, "java.util.Map");
        List<Object> tags = new ArrayList<>();
        for (Object k : details.keySet()) tags.add(String.valueOf(k));
        return tags;
      }
      case "flush":
        flush(str(req, "keyspace", null), req.get("tables"));
        return null;
      case "drain":
        invoke("drain", new Object[0]);
        return null;
      case "import":
        return importSSTables(str(req, "keyspace", ""), str(req, "table", ""), req.get("dirs"));
      default:
        throw new IllegalArgumentException("unknown operation " + op);
    }
  }

  /** This node as `nodetool status` shows it: its row's Up/Down and state, plus its operation mode. */
  private Map<String, Object> status() throws Exception {
    String hostId = (String) attr("LocalHostId");
    Map<?, ?> ids = (Map<?, ?>) attr("HostIdToEndpointWithPort");
    Object endpoint = ids.get(hostId);
    Map<String, Object> s = new LinkedHashMap<>();
    s.put("hostId", hostId);
    s.put("endpoint", endpoint);
    s.put("live", endpoint != null && ((Collection<?>) attr("LiveNodesWithPort")).contains(endpoint));
    String state = "Normal";
    if (endpoint != null && ((Collection<?>) attr("JoiningNodesWithPort")).contains(endpoint)) state = "Joining";
    else if (endpoint != null && ((Collection<?>) attr("LeavingNodesWithPort")).contains(endpoint)) state = "Leaving";
    else if (endpoint != null && ((Collection<?>) attr("MovingNodesWithPort")).contains(endpoint)) state = "Moving";
    s.put("state", state);
    s.put("mode", attr("OperationMode"));
    return s;
  }

  /** nodetool flush [keyspace [tables...]]: with no keyspace, every keyspace (system ones included), one by one. */
  private void flush(String keyspace, Object tables) throws Exception {
    List<?> all = (List<?>) attr("Keyspaces");
    List<String> keyspaces = new ArrayList<>();
    if (keyspace == null) {
      for (Object k : all) keyspaces.add(String.valueOf(k));
    } else {
      if (!all.contains(keyspace)) throw new IllegalArgumentException("Keyspace [" + keyspace + "] does not exist.");
      keyspaces.add(keyspace);
    }
    List<String> names = new ArrayList<>();
    if (tables instanceof List) for (Object t : (List<?>) tables) names.add(String.valueOf(t));
    for (String k : keyspaces) invoke("forceKeyspaceFlush", new Object[] {k, names.toArray(NONE)}, "java.lang.String", STRINGS);
  }

  /**
   * nodetool import &lt;ks&gt; &lt;table&gt; &lt;dir&gt;...: ColumnFamilyStoreMBean.importNewSSTables with nodetool's defaults
   * (levels and repaired state reset, SSTables and their tokens verified, caches invalidated, no extended verify,
   * files moved, not copied). Each SSTable gets a new id of the table's own kind as it moves in. Answers the
   * directories that failed.
   */
  private Object importSSTables(String keyspace, String table, Object dirs) throws Exception {
    if (keyspace.isEmpty() || table.isEmpty()) throw new IllegalArgumentException("import needs a keyspace and a table");
    java.util.Set<String> paths = new java.util.LinkedHashSet<>();
    if (dirs instanceof List) for (Object d : (List<?>) dirs) paths.add(String.valueOf(d));
    if (paths.isEmpty()) throw new IllegalArgumentException("import needs at least one directory");
    ObjectName name = new ObjectName(String.format("org.apache.cassandra.db:type=Tables,keyspace=%s,table=%s", keyspace, table));
    Object[] params = {paths, true, true, true, true, true, false, false};
    String b = "boolean";
    return call(() -> mbs.invoke(name, "importNewSSTables", params, new String[] {"java.util.Set", b, b, b, b, b, b, b}));
  }

  private static String tag(Map<String, Object> req) {
    String tag = str(req, "tag", "");
    if (tag.isEmpty()) throw new IllegalArgumentException("a snapshot tag is required");
    return tag;
  }

  private Object attr(String name) throws Exception {
    return call(() -> mbs.getAttribute(new ObjectName(SS), name));
  }

  private Object invoke(String op, Object[] params, String... signature) throws Exception {
    return call(() -> mbs.invoke(new ObjectName(SS), op, params, signature));
  }

  private interface Call {
    Object run() throws Exception;
  }

  /**
   * Connects when there is no connection. A call whose connection could not even be opened (the node restarted
   * since the last request) reached no server, so it is retried once on a new connection; any other I/O failure
   * drops the connection for the next request and is reported.
   */
  private Object call(Call c) throws Exception {
    connect();
    try {
      return c.run();
    } catch (java.rmi.ConnectException | java.rmi.NoSuchObjectException e) {
      disconnect();
      connect();
      return c.run();
    } catch (IOException e) {
      disconnect();
      throw e;
    }
  }

  private void connect() throws IOException {
    if (mbs != null) return;
    JMXServiceURL url = new JMXServiceURL(String.format("service:jmx:rmi:///jndi/rmi://%s:%d/jmxrmi", host, port));
    Map<String, Object> env = new HashMap<>();
    if (user != null && !user.isEmpty()) env.put(JMXConnector.CREDENTIALS, new String[] {user, password == null ? "" : password});
    connector = JMXConnectorFactory.connect(url, env);
    mbs = connector.getMBeanServerConnection();
  }

  private void disconnect() {
    mbs = null;
    if (connector != null) {
      try {
        connector.close();
      } catch (IOException ignored) {
        // Already broken: nothing to release.
      }
      connector = null;
    }
  }

  /** The innermost message of a failure (nodetool prints the same), without stack traces. */
  static String reason(Throwable e) {
    Throwable t = e;
    String msg = null;
    while (t != null) {
      if (t.getMessage() != null && !t.getMessage().isBlank()) msg = t.getClass().getSimpleName() + ": " + t.getMessage();
      if (t.getCause() == t) break;
      t = t.getCause();
    }
    if (msg == null) msg = e.getClass().getName();
    // javax.management wrappers repeat the cause's text after a semicolon; keep the first line.
    int nl = msg.indexOf('\n');
    return nl >= 0 ? msg.substring(0, nl) : msg;
  }

  private static String str(Map<String, Object> m, String key, String dflt) {
    Object v = m.get(key);
    return v == null ? dflt : String.valueOf(v);
  }

  @SuppressWarnings("unchecked")
  private static Map<String, Object> asMap(Object v) {
    if (!(v instanceof Map)) throw new IllegalArgumentException("a request must be a JSON object");
    return (Map<String, Object>) v;
  }

  /** A minimal JSON reader and writer: the JDK has none, and this client must need nothing else. */
  static final class Json {
    private final String s;
    private int i;

    Json(String s) {
      this.s = s;
    }

    Object value() {
      Object v = read();
      skip();
      if (i != s.length()) throw error();
      return v;
    }

    private Object read() {
      skip();
      if (i >= s.length()) throw error();
      char c = s.charAt(i);
      if (c == '{') {
        Map<String, Object> m = new LinkedHashMap<>();
        i++;
        skip();
        if (peek('}')) return m;
        do {
          skip();
          Object k = read();
          if (!(k instanceof String)) throw error();
          skip();
          expect(':');
          m.put((String) k, read());
          skip();
        } while (next(','));
        expect('}');
        return m;
      }
      if (c == '[') {
        List<Object> l = new ArrayList<>();
        i++;
        skip();
        if (peek(']')) return l;
        do {
          l.add(read());
          skip();
        } while (next(','));
        expect(']');
        return l;
      }
      if (c == '"') return string();
      if (s.startsWith("true", i)) return word(4, Boolean.TRUE);
      if (s.startsWith("false", i)) return word(5, Boolean.FALSE);
      if (s.startsWith("null", i)) return word(4, null);
      int start = i;
      while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) i++;
      if (start == i) throw error();
      String num = s.substring(start, i);
      return num.matches("-?\\d+") ? (Object) Long.parseLong(num) : (Object) Double.parseDouble(num);
    }

    private String string() {
      StringBuilder b = new StringBuilder();
      i++;
      while (true) {
        if (i >= s.length()) throw error();
        char c = s.charAt(i++);
        if (c == '"') return b.toString();
        if (c != '\\') {
          b.append(c);
          continue;
        }
        char e = s.charAt(i++);
        switch (e) {
          case 'n': b.append('\n'); break;
          case 't': b.append('\t'); break;
          case 'r': b.append('\r'); break;
          case 'b': b.append('\b'); break;
          case 'f': b.append('\f'); break;
          case 'u': b.append((char) Integer.parseInt(s.substring(i, i + 4), 16)); i += 4; break;
          default: b.append(e);
        }
      }
    }

    private Object word(int n, Object v) {
      i += n;
      return v;
    }

    private void skip() {
      while (i < s.length() && Character.isWhitespace(s.charAt(i))) i++;
    }

    private boolean peek(char c) {
      if (i < s.length() && s.charAt(i) == c) {
        i++;
        return true;
      }
      return false;
    }

    private boolean next(char c) {
      return peek(c);
    }

    private void expect(char c) {
      if (!peek(c)) throw error();
    }

    private IllegalArgumentException error() {
      return new IllegalArgumentException("bad JSON at character " + i);
    }

    static String write(Object v) {
      if (v == null) return "null";
      if (v instanceof Boolean || v instanceof Number) return String.valueOf(v);
      if (v instanceof Map) {
        StringBuilder b = new StringBuilder("{");
        for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
          if (b.length() > 1) b.append(',');
          b.append(write(String.valueOf(e.getKey()))).append(':').append(write(e.getValue()));
        }
        return b.append('}').toString();
      }
      if (v instanceof Collection) {
        StringBuilder b = new StringBuilder("[");
        for (Object o : (Collection<?>) v) {
          if (b.length() > 1) b.append(',');
          b.append(write(o));
        }
        return b.append(']').toString();
      }
      String str = String.valueOf(v);
      StringBuilder b = new StringBuilder("\"");
      for (int k = 0; k < str.length(); k++) {
        char c = str.charAt(k);
        if (c == '"' || c == '\\') b.append('\\').append(c);
        else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
        else b.append(c);
      }
      return b.append('"').toString();
    }
  }
}
