// Loaded into every server under test (node --expose-gc --import this): SIGUSR2 runs a
// full garbage collection. The idle figure then counts memory a connection holds, not
// the handshakes' garbage that the next collection would have freed. Every server gets
// the same, so none is measured with its garbage and another without.
process.on('SIGUSR2', () => {
  (globalThis as { gc?: () => void }).gc?.();
});
