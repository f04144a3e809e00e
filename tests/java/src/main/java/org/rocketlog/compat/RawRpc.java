package org.rocketlog.compat;

import java.net.InetAddress;
import java.net.UnknownHostException;
import java.time.ZoneOffset;
import java.time.ZonedDateTime;
import java.time.format.DateTimeFormatter;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

import javax.net.ssl.SSLException;

import apache.rocketmq.v2.Address;
import apache.rocketmq.v2.AddressScheme;
import apache.rocketmq.v2.Endpoints;
import apache.rocketmq.v2.MessagingServiceGrpc;
import apache.rocketmq.v2.Resource;
import org.apache.rocketmq.shaded.grpc.netty.GrpcSslContexts;
import org.apache.rocketmq.shaded.grpc.netty.NettyChannelBuilder;
import org.apache.rocketmq.shaded.io.grpc.CallOptions;
import org.apache.rocketmq.shaded.io.grpc.Channel;
import org.apache.rocketmq.shaded.io.grpc.ClientCall;
import org.apache.rocketmq.shaded.io.grpc.ClientInterceptor;
import org.apache.rocketmq.shaded.io.grpc.ForwardingClientCall;
import org.apache.rocketmq.shaded.io.grpc.ManagedChannel;
import org.apache.rocketmq.shaded.io.grpc.Metadata;
import org.apache.rocketmq.shaded.io.grpc.MethodDescriptor;
import org.apache.rocketmq.shaded.io.grpc.netty.shaded.io.netty.handler.ssl.util.InsecureTrustManagerFactory;

/**
 * Calls {@code apache.rocketmq.v2.MessagingService} directly through the generated stubs inside
 * the official client jar (gRPC and netty shaded under {@code org.apache.rocketmq.shaded}), for
 * the RPCs no released client calls and for requests the client API cannot make. Over TLS
 * trusting any certificate, as the client itself connects, with the headers the client sends.
 */
final class RawRpc implements AutoCloseable {
    private static final Metadata.Key<String> CLIENT_ID = key("x-mq-client-id");
    private static final Metadata.Key<String> LANGUAGE = key("x-mq-language");
    private static final Metadata.Key<String> PROTOCOL = key("x-mq-protocol");
    private static final Metadata.Key<String> CLIENT_VERSION = key("x-mq-client-version");
    private static final Metadata.Key<String> REQUEST_ID = key("x-mq-request-id");
    private static final Metadata.Key<String> NAMESPACE = key("x-mq-namespace");
    private static final Metadata.Key<String> DATE_TIME = key("x-mq-date-time");
    private static final DateTimeFormatter DATE_TIME_FORMAT = DateTimeFormatter.ofPattern("yyyyMMdd'T'HHmmss'Z'");
    /** The client's own inbound limit (130 MiB), above any body the broker accepts. */
    private static final int MAX_INBOUND = 130 * 1024 * 1024;

    final String host;
    final int port;
    private final ManagedChannel channel;
    private final MessagingServiceGrpc.MessagingServiceBlockingStub stub;

    RawRpc(String endpoint) throws SSLException {
        int colon = endpoint.lastIndexOf(':');
        this.host = endpoint.substring(0, colon);
        this.port = Integer.parseInt(endpoint.substring(colon + 1));
        var ssl = GrpcSslContexts.forClient().trustManager(InsecureTrustManagerFactory.INSTANCE).build();
        this.channel = NettyChannelBuilder.forAddress(host, port).sslContext(ssl).maxInboundMessageSize(MAX_INBOUND)
            .build();
        String clientId = hostName() + "@" + ProcessHandle.current().pid() + "@raw@"
            + Long.toString(System.nanoTime(), 36);
        this.stub = MessagingServiceGrpc.newBlockingStub(channel).withInterceptors(new Headers(clientId));
    }

    private static Metadata.Key<String> key(String name) {
        return Metadata.Key.of(name, Metadata.ASCII_STRING_MARSHALLER);
    }

    private static String hostName() {
        try {
            return InetAddress.getLocalHost().getHostName();
        } catch (UnknownHostException e) {
            return "localhost";
        }
    }

    /** The stub with a deadline of {@code secs} from now. */
    MessagingServiceGrpc.MessagingServiceBlockingStub stub(double secs) {
        return stub.withDeadlineAfter((long) (secs * 1000), TimeUnit.MILLISECONDS);
    }

    /** The access point as the client puts it in QueryRoute. */
    Endpoints endpoints() {
        return Endpoints.newBuilder().setScheme(AddressScheme.IPv4)
            .addAddresses(Address.newBuilder().setHost(host).setPort(port)).build();
    }

    static Resource resource(String name) {
        return Resource.newBuilder().setResourceNamespace("").setName(name).build();
    }

    @Override
    public void close() {
        channel.shutdownNow();
        try {
            channel.awaitTermination(5, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** The client's headers, fresh per call (request id, date). */
    private static final class Headers implements ClientInterceptor {
        private final String clientId;

        Headers(String clientId) {
            this.clientId = clientId;
        }

        @Override
        public <Q, R> ClientCall<Q, R> interceptCall(MethodDescriptor<Q, R> method, CallOptions options, Channel next) {
            return new ForwardingClientCall.SimpleForwardingClientCall<>(next.newCall(method, options)) {
                @Override
                public void start(Listener<R> listener, Metadata headers) {
                    headers.put(CLIENT_ID, clientId);
                    headers.put(LANGUAGE, "JAVA");
                    headers.put(PROTOCOL, "v2");
                    headers.put(CLIENT_VERSION, Scenario.CLIENT_VERSION);
                    headers.put(REQUEST_ID, UUID.randomUUID().toString());
                    headers.put(NAMESPACE, "");
                    headers.put(DATE_TIME, ZonedDateTime.now(ZoneOffset.UTC).format(DATE_TIME_FORMAT));
                    super.start(listener, headers);
                }
            };
        }
    }
}
