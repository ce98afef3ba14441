// The sidecar's DNS server: what the rest of the sidecar uses.
export { DEFAULT_DNS_LISTEN, DEFAULT_DNS_PORT, defaultUpstreams, startDnsServer, type DnsServer, type DnsServerOptions, type ListenAddress } from './server.js';
export { buildDnsTable, emptyDnsTable, DnsTable, reverseName, type DnsAnswer, type DnsRecords, type DnsTableOptions, type SrvTarget } from './table.js';
export { DnsMetrics } from './metrics.js';
