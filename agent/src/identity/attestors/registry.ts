// The attestors the agent configuration can turn on, in the order their attributes win (an
// earlier attestor's attribute is never overridden by a later one). One line per kind.
import type { RegisteredAttestorKind } from './attestor.ts';
import { cloudDocumentKind } from './cloud-document.ts';
import { environmentKind } from './environment.ts';
import { hostKind } from './host.ts';
import { postureKind } from './posture.ts';
import { staticKind } from './static.ts';

export const ATTESTOR_KINDS: readonly RegisteredAttestorKind[] = [staticKind, hostKind, environmentKind, cloudDocumentKind, postureKind];
