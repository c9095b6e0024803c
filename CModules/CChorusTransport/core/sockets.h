// Internal to the transport: socket set-up helpers shared by the engine.
#ifndef CHORUS_SOCKETS_H
#define CHORUS_SOCKETS_H
#include "../include/chorus_transport.h"

uint64_t chorus_now_ms(void);
/// Sets this thread's `chorus_last_failure` text (printf-style).
void chorus_note_failure(const char *format, ...) __attribute__((format(printf, 1, 2)));
uint64_t chorus_now_us(void);
void chorus_socket_configure(int fd, int buffer_bytes);
/// Binds the first free port of port...last_port (0: ephemeral). On failure chorus_last_failure says why.
int chorus_socket_listen(const char *host, uint16_t port, uint16_t last_port, int backlog, int *fd_out, uint16_t *bound_port);
/// Connects within timeout_ms. On failure chorus_last_failure says why.
int chorus_socket_connect(const char *host, uint16_t port, int timeout_ms, int buffer_bytes, int *fd_out);
struct addrinfo;
/// The addresses of host:port for a stream socket (`passive`: to bind). CHORUS_ERR_ADDRESS, with
/// chorus_last_failure saying why, when the name does not resolve.
int chorus_socket_resolve(const char *host, uint16_t port, int passive, struct addrinfo **out);
struct sockaddr_storage;
/// The numeric host and port of an address.
void chorus_socket_describe(const struct sockaddr_storage *address, char *host, size_t host_size, uint16_t *port);
#endif
