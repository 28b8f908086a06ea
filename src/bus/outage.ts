/**
 * How long a bus client waits for a lost broker before it reports the outcome unknown. Its own file, free of
 * amqplib, so the CLI's option text can name it without loading the AMQP client.
 */
export const DEFAULT_OUTAGE_DEADLINE_MS = 5 * 60 * 1000;
