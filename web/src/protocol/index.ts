export * from './types';
export * from './backoff';
export * from './roomStore';
export * from './client';
